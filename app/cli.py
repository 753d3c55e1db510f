"""Operator commands: ``python -m app.cli migrate|seed-demo|rotate-keys``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path

from alembic.config import Config
from sqlmodel.ext.asyncio.session import AsyncSession

from alembic import command
from app import db
from app.config import PROJECT_ROOT, get_settings
from app.logging_setup import configure_logging
from app.models.audit import OUTCOME_FAILED, OUTCOME_OK
from app.models.common import utcnow
from app.services import audit, auth, demo_history, symbols, vault, watchlist
from app.services import strategies as strategy_service
from app.vault_keys import SOURCE_FILE, VaultConfigError, load_key_ring, write_key_file
from brokers.paper.market import SimulatedMarket
from brokers.paper.symbols import SYMBOLS
from notifiers.webpush import generate_vapid_keys

log = logging.getLogger("app.cli")
DEMO_WATCHLIST = ("000660", "035420", "035720")


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", db.sync_url(url or get_settings().database_url))
    return cfg


def migrate(url: str | None = None) -> None:
    command.upgrade(alembic_config(url), "head")


def _demo_password_file() -> Path:
    return PROJECT_ROOT / "data" / "demo-password.txt"


def demo_password() -> str:
    """DEMO_PASSWORD if set; else one generated once and kept (mode 600) under data/."""
    configured = get_settings().demo_password
    if configured:
        return configured
    path = _demo_password_file()
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")
    return password


async def seed_demo() -> tuple[str, str]:
    settings = get_settings()
    market = SimulatedMarket(seed=settings.market_seed)
    password = demo_password()
    async with db.session() as s:
        added = await symbols.sync_master(s, await market.list_symbols())
        log.info("symbol master: %d new", added)
        user = await auth.get_user_by_email(s, settings.demo_email)
        if user is None:
            # The demo account is the instance's first admin, so the admin pages show too.
            user = await auth.create_local_user(
                s, settings.demo_email, password, display_name="Demo", language="ko", role="admin"
            )
            for code in DEMO_WATCHLIST:
                await watchlist.add(s, user.id or 0, code)
            await _seed_demo_strategies(s, user.id or 0)
            log.info("demo user created")
        elif user.password_hash is None or not auth.verify_password(user.password_hash, password):
            user.password_hash = auth.hash_password(password)
            s.add(user)
            await s.commit()
        # Synthetic past for every demo symbol, so indicators warm up and rule
        # previews have bars at once; only empty series are filled, so reruns are no-ops.
        await demo_history.backfill(s, SYMBOLS, utcnow(), seed=settings.market_seed)
    await db.dispose()
    return settings.demo_email, password


async def _seed_demo_strategies(s: AsyncSession, user_id: int) -> None:
    """Two strategies, so a new user sees the feature work at once: a 1-minute MA cross
    trading a fifth of the paper account on the simulated stream (the rest stays free
    for the user's own orders), and a daily one to backtest over the synthetic history."""
    live = await strategy_service.create_config(
        s,
        user_id,
        label="MA 5/20 · 1m",
        strategy="ma_cross",
        params={"fast": 5, "slow": 20, "fraction": 0.2},
        timeframe="1m",
    )
    await strategy_service.attach(s, user_id, live.id, symbol=DEMO_WATCHLIST[0], mode="paper")
    await strategy_service.create_config(
        s,
        user_id,
        label="MA 20/60 · 1d",
        strategy="ma_cross",
        params={"fast": 20, "slow": 60},
        timeframe="1d",
    )


# rotate-keys exit codes
EXIT_OK = 0
EXIT_VERIFY_FAILED = 1  # some secret does not decrypt, or is still on an old key
EXIT_CONFIG = 2  # the key ring in VAULT_KEYS / the key file is invalid
EXIT_REFUSED = 3  # --drop-key: the key is active or still in use


def _say(line: str) -> None:
    """The command's one-line result, for the operator's terminal (never a secret)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _complain(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


async def rotate_keys(batch_size: int = 500, pause: float = 0.0) -> int:
    """Move every secret onto the active key, then decrypt them all to prove it worked.

    Safe to interrupt and rerun: each batch commits on its own, and a rerun selects
    only rows whose key is not the active one. Exit code 0 only if every secret
    decrypts and none is left on another key.
    """
    ring = load_key_ring(get_settings())
    async with db.session() as s:
        before = await vault.key_usage(s)
    log.info("rotate-keys: active key %s, secrets by key before: %s", ring.active, before)
    report = await vault.rotate(ring, batch_size=batch_size, pause=pause)
    check = await vault.verify_all(ring)
    ok = check.passed and report.remaining == 0 and not report.failures
    await audit.record(
        audit.KEY_ROTATION,
        actor_id=None,
        target_type="vault_key",
        target_id=ring.active,
        outcome=OUTCOME_OK if ok else OUTCOME_FAILED,
        detail={
            "active": ring.active,
            "rotated": report.rotated,
            "batches": report.batches,
            "not_rotated": len(report.failures),
            "remaining_on_other_keys": report.remaining,
            "verified": check.ok,
            "verify_failed": check.failed,
            "total": check.total,
            "by_key_before": before,
            "by_key_after": check.by_key,
        },
    )
    for secret_id, code in check.failures:
        log.error("rotate-keys: secret %d fails verification (%s)", secret_id, code)
    _say(
        f"rotate-keys: active key {ring.active}; re-encrypted {report.rotated} in "
        f"{report.batches} batches; verified {check.ok}/{check.total}; "
        f"{report.remaining} left on other keys; {'OK' if ok else 'FAILED'}"
    )
    return EXIT_OK if ok else EXIT_VERIFY_FAILED


async def drop_key(kid: str) -> int:
    """Retire a key: refused while it is active or any secret still uses it.

    A ring from a key file is rewritten without the key (atomically, mode 0600). A
    ring from VAULT_KEYS cannot be edited from here: the command says what to remove.
    Running processes keep their ring until restarted, which is harmless once no row
    uses the key.
    """
    ring = load_key_ring(get_settings())
    async with db.session() as s:
        usage = await vault.key_usage(s)
    in_use = usage.get(kid, 0)
    reason = ""
    if kid == ring.active:
        reason = "it is the active key; make another key active and run rotate-keys first"
    elif in_use:
        reason = f"{in_use} secrets still use it; run `python -m app.cli rotate-keys` first"
    if reason:
        await audit.record(
            audit.KEY_ROTATION,
            actor_id=None,
            target_type="vault_key",
            target_id=kid,
            outcome=OUTCOME_FAILED,
            detail={"drop_key": kid, "refused": True, "in_use": in_use},
        )
        _complain(f"rotate-keys: refusing to drop vault key {kid!r}: {reason}")
        return EXIT_REFUSED
    if kid not in ring.keys:
        _say(f"rotate-keys: vault key {kid!r} is not in the key ring and no secret uses it")
        return EXIT_OK
    reduced = ring.without(kid)
    check = await vault.verify_all(reduced)
    if not check.passed:
        _complain(
            f"rotate-keys: refusing to drop vault key {kid!r}: {check.failed} of "
            f"{check.total} secrets do not decrypt without it"
        )
        return EXIT_VERIFY_FAILED
    if ring.source == SOURCE_FILE and ring.path is not None:
        write_key_file(ring.path, reduced, replace=True)
        where = f"removed it from {ring.path}; restart the app to reload the ring"
    else:
        where = "remove it from VAULT_KEYS (this command cannot edit the environment)"
    await audit.record(
        audit.KEY_ROTATION,
        actor_id=None,
        target_type="vault_key",
        target_id=kid,
        detail={
            "drop_key": kid,
            "verified": check.ok,
            "file_rewritten": ring.source == SOURCE_FILE,
        },
    )
    _say(f"rotate-keys: no secret uses vault key {kid!r} ({check.ok} verified without it); {where}")
    return EXIT_OK


async def _run_vault_command(args: argparse.Namespace) -> int:
    try:
        if args.drop_key:
            return await drop_key(args.drop_key)
        return await rotate_keys(args.batch_size, args.pause)
    except VaultConfigError as exc:
        _complain(f"rotate-keys: {exc}")
        return EXIT_CONFIG
    finally:
        await db.dispose()


async def set_role(email: str, role: str) -> int:
    """Bootstrap or repair admin rights from the server's shell (audited, actor none)."""
    from app.services import audit

    if role not in ("user", "admin"):
        sys.stderr.write(f"unknown role {role!r}: use user or admin\n")
        return 2
    try:
        async with db.session() as s:
            user = await auth.get_user_by_email(s, email)
            if user is None:
                sys.stderr.write(f"no user with e-mail {email}\n")
                return 1
            before = user.role
            user.role = role
            s.add(user)
            await s.commit()
        await audit.record(
            audit.ROLE_CHANGED,
            actor_id=None,
            target_type="user",
            target_id=user.id,
            detail={"from": before, "to": role, "via": "cli"},
        )
        sys.stdout.write(f"{email}: {before} -> {role}\n")
        return 0
    finally:
        await db.dispose()


async def deliver() -> int:
    """The outbox worker alone, without the web app or the market: for an operator who
    runs delivery in its own process. It shares the outbox with the app's runner, so
    run it only where the app's runner does not deliver (one deliverer per database)."""
    import contextlib
    import signal

    from app.runtime.delivery import DeliveryWorker
    from app.runtime.notifier_setup import build_notifiers

    settings = get_settings()
    notifiers = build_notifiers(settings)
    worker = DeliveryWorker(settings, notifiers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(worker.run(), name="deliver")
    log.info("delivering the outbox on %s", ", ".join(sorted(notifiers)) or "in-app only")
    try:
        await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for notifier in notifiers.values():
            close = getattr(notifier, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        await db.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="apply all alembic migrations")
    sub.add_parser(
        "seed-demo", help="symbol master, demo user and watchlist, synthetic candle history"
    )
    role = sub.add_parser("set-role", help="make a user an admin, or a user again")
    role.add_argument("email")
    role.add_argument("role", choices=["user", "admin"])
    rot = sub.add_parser(
        "rotate-keys",
        help="re-encrypt every vault secret with the active key, then verify them all",
        description="Resumable: rerun after an interruption. Exit codes: 0 done, "
        "1 verification failed, 2 bad key ring, 3 --drop-key refused.",
    )
    rot.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    rot.add_argument(
        "--pause", type=float, default=0.0, help="seconds to wait between batches (throttle)"
    )
    rot.add_argument(
        "--drop-key",
        metavar="KID",
        help="instead of rotating: retire KID once no secret uses it "
        "(rewrites the key file; with VAULT_KEYS, says what to remove)",
    )
    sub.add_parser(
        "vapid-keys",
        help="print a new VAPID key pair for web push (put both lines in .env, once)",
    )
    sub.add_parser(
        "deliver",
        help="run only the outbox delivery worker (stop with SIGTERM or Ctrl-C)",
    )
    args = parser.parse_args(argv)
    if args.cmd == "rotate-keys" and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    settings = get_settings()
    configure_logging(settings.log_level, settings.json_logs)
    if args.cmd == "migrate":
        migrate()
        log.info("database is at the latest migration")
    elif args.cmd == "seed-demo":
        email, password = asyncio.run(seed_demo())
        # Shown on the terminal on purpose (the README points here), never logged.
        sys.stdout.write(f"\n  Demo sign-in: {email}\n  Password:     {password}\n\n")
    elif args.cmd == "rotate-keys":
        return asyncio.run(_run_vault_command(args))
    elif args.cmd == "set-role":
        return asyncio.run(set_role(args.email, args.role))
    elif args.cmd == "deliver":
        return asyncio.run(deliver())
    elif args.cmd == "vapid-keys":
        public, private = generate_vapid_keys()
        # For the operator's terminal only: a private key never goes to the log.
        sys.stdout.write(f"VAPID_PUBLIC_KEY={public}\nVAPID_PRIVATE_KEY={private}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
