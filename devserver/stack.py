"""The whole local stack, started in dependency order and stopped in reverse."""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from devserver.apigateway import ApiGateway
from devserver.database import EmbeddedPostgres, load_samples_if_empty, migrate
from devserver.lambdas import ROOT, Runtime, ensure_layer_importable
from devserver.s3 import POLL_SECONDS, LocalS3, NotificationPoller, create_versioned_bucket
from devserver.template import S3Notification, Template, load_template

log = logging.getLogger("devserver")

BUCKET = "paysync-local-snapshots"
REGION = "us-east-1"
# Dummy credentials: moto accepts anything, and nothing local may ever reach real AWS.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


class PortInUse(Exception):
    pass


class DatabaseUnavailable(Exception):
    """The database named by DATABASE_URL is unreachable, refuses the login, or does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    port: int = 3000
    s3_port: int = 0
    data_dir: Path = ROOT / ".local" / "pgdata"
    samples: bool = True
    template: Path = ROOT / "template.yaml"
    containers: int = 4  # the most containers (concurrent invocations) of one function
    s3_poll_seconds: float = POLL_SECONDS


class LocalStack:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.template: Template | None = None
        self.api: ApiGateway | None = None
        self.s3: LocalS3 | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.poller: NotificationPoller | None = None
        self.runtime: Runtime | None = None
        self.s3_endpoint = ""
        self.database_url = ""
        self.database_embedded = False
        self.sample_lines: list[str] = []

    def start(self) -> None:
        """Start everything; on failure, what was started is stopped again."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        options = self.options
        template = self.template = load_template(options.template)
        for warning in template.warnings:
            log.warning("template: %s", warning)
        # Bind the HTTP port first: a port in use fails in a second, not after PostgreSQL started.
        try:
            self.api = ApiGateway(options.host, options.port, template.routes)
        except OSError as exc:
            raise PortInUse(f"cannot listen on {options.host}:{options.port}: {exc.strerror}") from exc
        try:
            self.s3 = LocalS3(options.s3_port)
        except OSError as exc:
            raise PortInUse(f"cannot listen on 127.0.0.1:{options.s3_port} (S3): {exc.strerror}") from exc
        self.s3.start()
        self.s3_endpoint = self.s3.endpoint

        ensure_layer_importable()
        self._configure_environment()
        self._start_database()

        # The handlers are imported only now, with the environment in place (as in a Lambda container).
        notifications = template.notifications or self._fallback_notifications(template)
        used = {route.function.name for route in template.routes} | {n.function.name for n in notifications}
        functions = [template.functions[name] for name in sorted(used)]
        runtime = self.runtime = Runtime(functions, REGION, options.containers)

        import boto3

        client = boto3.client("s3", endpoint_url=self.s3_endpoint, region_name=REGION)
        create_versioned_bucket(client, BUCKET)
        client.close()
        self.poller = NotificationPoller(BUCKET, REGION, notifications, runtime, poll_seconds=options.s3_poll_seconds)
        self.s3.on_write = self.poller.notify
        self.poller.start()
        self.api.start(runtime)

    def _start_database(self) -> None:
        if os.environ.get("DATABASE_URL"):
            self.database_url = os.environ["DATABASE_URL"]
        else:
            self.postgres = EmbeddedPostgres(self.options.data_dir)
            self.database_url = self.postgres.start()
            self.database_embedded = True
            os.environ["DATABASE_URL"] = self.database_url
        self._clear_paysync_caches()
        self._check_database()
        log.info("schema at revision %s", migrate(self.database_url))
        if self.options.samples:
            self.sample_lines = load_samples_if_empty(self.database_url, ROOT / "samples")

    def _check_database(self) -> None:
        # One clear line instead of the migration tool's long traceback.
        from paysync import errors
        from paysync.cli import connect_checked
        from paysync.dal.db import close_quietly, parse_database_url
        from paysync.observability import logger as paysync_logger

        # The library's own warning (which names the host) would be a second line.
        level = paysync_logger.log_level
        paysync_logger.setLevel("ERROR")
        try:
            params = parse_database_url(self.database_url)
            close_quietly(connect_checked(params))
        except ValueError as exc:
            raise DatabaseUnavailable(f"invalid DATABASE_URL: {exc}") from None
        except errors.DatabaseUnavailable as exc:
            # Locally the host is the user's own: name it (API answers never do).
            message = exc.message
            if not message.startswith("the database at"):
                where = params.unix_sock or f"{params.host}:{params.port}"
                message = f"the database at {where} is unreachable; retry later"
            raise DatabaseUnavailable(message) from None
        finally:
            paysync_logger.setLevel(level)

    def _configure_environment(self) -> None:
        # Before any boto3 client or paysync setting exists: handlers read these once per process.
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            os.environ.pop(name, None)
        os.environ.update(AWS_ENV)
        os.environ["S3_ENDPOINT_URL"] = self.s3_endpoint
        os.environ["SNAPSHOT_BUCKET"] = BUCKET
        # Powertools Metrics would print an EMF blob per sync; set it to false to see them.
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

    @staticmethod
    def _clear_paysync_caches() -> None:
        from paysync.config import get_settings
        from paysync.dal import storage

        get_settings.cache_clear()
        storage.s3_client.cache_clear()

    @staticmethod
    def _fallback_notifications(template: Template) -> list[S3Notification]:
        # No S3 event in the template: deliver every key to the function whose code lives in
        # functions/reconcile/; it ignores keys that are not snapshots.
        for function in template.functions.values():
            if function.module_path.parent.name == "reconcile":
                log.warning("template: no S3 event declared; every new object goes to %s", function.name)
                return [S3Notification(function)]
        log.warning("template: no S3 event declared; objects put into the bucket are not delivered")
        return []

    def stop(self) -> None:
        """Stop in reverse order; safe to call more than once and after a partial start."""
        if self.poller is not None:
            self.poller.request_stop()  # it may be waiting out its poll interval meanwhile
        if self.api is not None:
            self.api.stop()
            self.api = None
        if self.runtime is not None:
            self.runtime.stop()  # a sync still running is stopped; its transaction rolls back
            self.runtime = None
        if self.poller is not None:
            self.poller.stop()
            self.poller = None
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def banner(self) -> str:
        assert self.api is not None
        assert self.template is not None
        host = self.options.host if self.options.host not in ("0.0.0.0", "") else "127.0.0.1"
        api = f"http://{host}:{self.api.port}"
        shown_url = self.database_url if self.database_embedded else _without_password(self.database_url)
        routes = "\n".join(
            f"    {route.method:<6} {route.path:<16} -> {route.function.name}" for route in self.template.routes
        )
        env = " ".join(
            f"{name}={shlex.quote(value)}"
            for name, value in {
                "DATABASE_URL": shown_url,
                "S3_ENDPOINT_URL": self.s3_endpoint,
                "SNAPSHOT_BUCKET": BUCKET,
                **{k: v for k, v in AWS_ENV.items() if k != "AWS_REGION"},
            }.items()
        )
        embedded = self.database_embedded
        samples = "".join(f"\n    {line}" for line in self.sample_lines)
        lines = [
            "",
            "paysync local stack is up (Ctrl-C to stop)",
            f"  API        {api}",
            routes,
            f"  S3         {self.s3_endpoint}   bucket {BUCKET}",
            f"  database   {shown_url}" + (f"   (embedded, data in {self.options.data_dir})" if embedded else ""),
        ]
        if samples:
            lines.append(f"  samples loaded:{samples}")
        lines += [
            "",
            "  the paysync CLI and the aws CLI against this stack:",
            f"    export {env}",
            "    paysync import payments samples/payments.json",
            f"    aws --endpoint-url {self.s3_endpoint} s3 cp samples/patients.json s3://{BUCKET}/patients/manual.json",
            f"    {_psql()} {shlex.quote(shown_url)}",
            "",
            "  try:",
            f"    curl -s '{api}/patients?payment_min=10&payments_max=20'",
            f"    curl -si '{api}/patients?limit=2'",
            f"    curl -s -H 'Content-Type: application/json' --data-binary @samples/payments.json {api}/payments",
            f'    curl -s -H "Content-Type: application/json" -d \'{{"entity": "patients"}}\' {api}/uploads',
            f"    curl -s {api}/syncs",
            "",
        ]
        return "\n".join(lines)


def _psql() -> str:
    # pgserver ships psql; a system one works too.
    try:
        import pgserver
    except ImportError:
        return "psql"
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    return str(bundled) if bundled.is_file() else "psql"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
