from runcoord.codec.cli import app

app(prog_name="python -m runcoord.codec")
