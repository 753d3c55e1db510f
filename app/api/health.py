"""Health for load balancers and operators: DB reachable, runner state."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app import db
from app.runtime.runner import current_runner

router = APIRouter()


@router.get("/api/health")
async def health() -> JSONResponse:
    db_ok = True
    try:
        async with db.session() as s:
            await s.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except Exception:
        db_ok = False
    runner = current_runner()
    body = {
        "status": "ok" if db_ok else "degraded",
        "database": db_ok,
        "runner": {
            "active": runner is not None,
            "subscribed": len(runner.subscribed) if runner else 0,
            "rules": len(runner.book) if runner else 0,
            "ticks_seen": runner.ticks_seen if runner else 0,
            "events_recorded": runner.events_recorded if runner else 0,
        },
    }
    return JSONResponse(body, status_code=200 if db_ok else 503)
