"""Health for load balancers and operators: DB reachable, runner leadership, broker
sessions, outbox lag and delivery failures (counts and states only: it is public)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.services import ops_status

router = APIRouter()


@router.get("/api/health")
async def health() -> JSONResponse:
    status = await ops_status.gather()
    return JSONResponse(status.health_body(), status_code=200 if status.database else 503)
