"""``python -m sweep.proxy``: Optuna's gRPC storage proxy in front of a study's database.

python -m sweep.proxy postgresql://user:pass@db/sweeps --host 0.0.0.0 --port 13000

Hundreds of workers each holding connections to PostgreSQL exhaust it; through the proxy (Optuna
>= 4.2, ``pip install 'prune-sweep[grpc]'``) they hold one gRPC channel each and the proxy holds
the database connections. Workers then run with ``hydra.sweeper.storage=grpc://HOST:PORT``. The
budget holds without the study lock, which the proxy cannot pass on (trial numbers are the
tickets, `sweep.search._study.keep_ticket`); Optuna's heartbeat does not pass through either,
so a dead worker's trial is recovered by a worker restarted on its host, as on a journal file.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence

from sweep.errors import ConfigError, fail
from sweep.hashing import mask_password

_DATABASES = "accepted: postgresql://user:pass@host/db, mysql://..., sqlite:///file.db"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.proxy", description=__doc__.splitlines()[0].split(": ", 1)[1]
    )
    parser.add_argument("storage", help="database URL (postgresql://, mysql://, sqlite:///)")
    parser.add_argument("--host", default="localhost", help="address to listen on")
    parser.add_argument("--port", type=int, default=13000)
    args = parser.parse_args(argv)
    if "://" not in args.storage or args.storage.startswith("grpc://"):
        fail(f"storage={mask_password(args.storage)!r} is not a database URL; {_DATABASES}")
    if not 0 < args.port < 65536:
        fail(f"--port={args.port} is out of range; accepted: 1 to 65535")
    import optuna
    from optuna.storages import run_grpc_proxy_server

    try:
        import grpc  # noqa: F401 - Optuna imports it lazily, and fails late
    except ImportError:
        fail("the gRPC proxy needs grpcio; accepted: pip install 'prune-sweep[grpc]'")
    from sweep.search._study import driver_url, open_storage

    try:  # a bad URL fails here with one line, and the schema exists
        open_storage(args.storage, setting="storage")
    except ConfigError as e:
        fail(f"{str(e).partition('; accepted:')[0]}; {_DATABASES}")
    # Optuna's cached storage, as its proxy documentation asks
    storage = optuna.storages.get_storage(driver_url(args.storage))
    print(
        f"proxy for {mask_password(args.storage)} on {args.host}:{args.port}; workers: "
        f"hydra.sweeper.storage=grpc://{args.host}:{args.port}",
        flush=True,
    )
    with warnings.catch_warnings():  # experimental since Optuna 4.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        run_grpc_proxy_server(storage, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
