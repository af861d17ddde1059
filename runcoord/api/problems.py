"""The body of every error the API answers (FastAPI's own shape), shared by the route modules
so the OpenAPI document names one schema for it."""

from __future__ import annotations

from pydantic import BaseModel


class Problem(BaseModel):
    detail: str
