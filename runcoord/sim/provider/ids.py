"""Object ids in OpenAI's formats (``run_`` + 24 alphanumerics, ``resp_`` + 48 hex, ...).

With a seed the ids repeat from one start of the simulator to the next, so a failing harness
run can be replayed and its ids compared.
"""

from __future__ import annotations

import random
import string

_ALNUM = string.ascii_letters + string.digits
_HEX = "0123456789abcdef"


class Ids:
    def __init__(self, seed: int | None = None) -> None:
        self._rng: random.Random = (
            random.Random(seed) if seed is not None else random.SystemRandom()
        )

    def alnum(self, prefix: str, length: int = 24) -> str:
        return prefix + "".join(self._rng.choice(_ALNUM) for _ in range(length))

    def hex(self, prefix: str, length: int = 48) -> str:
        return prefix + "".join(self._rng.choice(_HEX) for _ in range(length))
