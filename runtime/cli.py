"""The ``edgewatch`` command: run | validate | schema | fit | models verify/inspect | bench |
record."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from runtime import __version__
from runtime.config.loader import iter_problems, load_config
from runtime.config.schema import json_schema
from runtime.errors import ConfigError, EdgewatchError

if TYPE_CHECKING:
    from runtime.mqtt_settings import MqttSettings

logger = logging.getLogger("edgewatch")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in DESKTOP_COMMANDS:  # every option belongs to the tool, --help too
        return _desktop(argv[0], argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    handler: int = args.handler(args)
    return handler


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgewatch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgewatch {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run every pipeline of a device config")
    run.add_argument("config", type=Path)
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    run.add_argument("--log-level", default=None, help="overrides the config's logging.level")
    run.set_defaults(handler=_cmd_run)

    validate = sub.add_parser("validate", help="check device configs; exit 1 if any is invalid")
    validate.add_argument("configs", type=Path, nargs="+")
    validate.add_argument(
        "--check-secrets",
        action="store_true",
        help="also check that password_env / password_file can be read here",
    )
    validate.set_defaults(handler=_cmd_validate)

    schema = sub.add_parser("schema", help="print the device config JSON Schema")
    schema.add_argument("--output", type=Path, default=None)
    schema.set_defaults(handler=_cmd_schema)

    for command, help_text in DESKTOP_HELP.items():  # listed in --help; main() dispatches
        desktop = sub.add_parser(command, help=f"{help_text} (desktop; tools extra)")
        desktop.set_defaults(handler=lambda args, c=command: _desktop(c, []))

    models = sub.add_parser("models", help="model bundle commands")
    models_sub = models.add_subparsers(required=True, metavar="ACTION")
    verify = models_sub.add_parser(
        "verify", help="check a bundle's sha256 and tensors, then load it"
    )
    verify.add_argument("bundle", type=Path)
    verify.set_defaults(handler=_cmd_models_verify)
    _add_inspect_and_bench(models_sub, sub)

    record = sub.add_parser(
        "record", help="append every MQTT message on a topic filter to a JSONL file (for replay)"
    )
    record.add_argument("topic", help="topic filter; wildcards '+' and '#' are fine")
    record.add_argument("file", type=Path, help="JSONL file, appended to")
    record.add_argument("--config", type=Path, default=None, help="use this device config's mqtt")
    record.add_argument("--host", default=None, help="broker host (default 127.0.0.1)")
    record.add_argument("--port", type=int, default=None, help="broker port (default 1883)")
    record.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    record.add_argument("--count", type=int, default=None, help="stop after N messages")
    record.add_argument("--seconds", type=float, default=None, help="stop after S seconds")
    record.add_argument("--log-level", default="WARNING")
    record.set_defaults(handler=_cmd_record)
    return parser


def _cmd_validate(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.configs:
        problems = list(iter_problems(path, check_secrets=args.check_secrets))
        if problems:
            bad += 1
            print(f"{path}: invalid ({len(problems)} error(s))")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"{path}: ok")
    return 1 if bad else 0


def _cmd_schema(args: argparse.Namespace) -> int:
    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


def _cmd_models_verify(args: argparse.Namespace) -> int:
    from runtime.backends.base import BACKENDS
    from runtime.model import LoadedModel, read_manifest
    from runtime.registry import import_submodules

    _setup_logging("WARNING")
    import_submodules("runtime.backends")
    try:
        kind = read_manifest(args.bundle).backend
        config = BACKENDS.get(kind).config_type.model_validate({"type": kind})
        model = LoadedModel.load(args.bundle, config)
    except EdgewatchError as exc:
        print(f"edgewatch: {exc}", file=sys.stderr)
        return 1
    m = model.manifest
    print(
        f"{m.name} {m.version} ok: sha256 {m.sha256}, inputs "
        f"{[(i.name, i.shape, i.dtype) for i in m.inputs]}, outputs "
        f"{[(o.name, o.shape, o.dtype) for o in m.outputs]}, providers {model.backend.active_providers}"
    )
    model.close()
    return 0


def _add_inspect_and_bench(
    models_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    settings_help = (
        'backend settings as JSON keyed by backend, e.g. \'{"onnxruntime": {"providers": '
        '["OpenVINOExecutionProvider", "CPUExecutionProvider"]}}\''
    )
    inspect = models_sub.add_parser(
        "inspect", help="print a bundle's or model file's tensors, quantization and partitions"
    )
    inspect.add_argument("model", type=Path, help="bundle directory or .onnx/.tflite file")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.add_argument("--backend-config", type=_json_object, default={}, help=settings_help)
    inspect.set_defaults(handler=_cmd_models_inspect)

    bench = sub.add_parser(
        "bench", help="latency table per model, backend and threads on this device"
    )
    bench.add_argument("models", type=Path, nargs="+", help="bundle directories or model files")
    bench.add_argument("--threads", type=_int_list, default=[1], help="e.g. 1,2 (default 1)")
    bench.add_argument(
        "--backends", type=_name_list, default=None, help="default: every one that loads it"
    )
    bench.add_argument("--runs", type=_positive, default=100, help="timed calls per measurement")
    bench.add_argument("--warmup", type=_non_negative, default=10)
    bench.add_argument("--repeat", type=_positive, default=3, help="measurements; medians shown")
    bench.add_argument(
        "--shape",
        type=_shape_arg,
        action="append",
        default=[],
        metavar="NAME=1x3x224x224",
        help="shape for an input with dynamic dimensions (default: those dimensions are 1)",
    )
    bench.add_argument("--backend-config", type=_json_object, default={}, help=settings_help)
    bench.set_defaults(handler=_cmd_bench)


def _cmd_models_inspect(args: argparse.Namespace) -> int:
    from runtime.inspect_model import format_report, inspect, open_backend, resolve_target

    _setup_logging("WARNING")
    try:
        target = resolve_target(args.model)
        problem = target.sha256_problem()
        if problem is not None:
            print(f"edgewatch: {problem}", file=sys.stderr)
        backend = open_backend(target, settings=args.backend_config.get(target.backend))
        try:
            report = inspect(target, backend)
        finally:
            backend.close()
    except EdgewatchError as exc:
        print(f"edgewatch: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if problem is not None else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from runtime.bench import format_results, run_bench
    from runtime.inspect_model import resolve_target

    _setup_logging("WARNING")
    try:
        targets = [resolve_target(path) for path in args.models]
        results, notes = run_bench(
            targets,
            threads=args.threads,
            runs=args.runs,
            warmup=args.warmup,
            repeats=args.repeat,
            backends=args.backends,
            shapes=dict(args.shape),
            settings=args.backend_config,
        )
    except EdgewatchError as exc:
        print(f"edgewatch: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"edgewatch: {note}", file=sys.stderr)
    if not results:
        print("edgewatch: nothing to benchmark", file=sys.stderr)
        return 1
    print(format_results(results))
    return 0


def _json_object(text: str) -> dict[str, dict[str, object]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError("expected an object of backend name → settings object")
    return value


def _name_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _int_list(text: str) -> list[int]:
    values = [_positive(n) for n in _name_list(text)]
    return list(dict.fromkeys(values))


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(_positive(d) for d in dims.lower().split("x"))
    except argparse.ArgumentTypeError:
        shape = ()
    if not sep or not name or not shape:
        raise argparse.ArgumentTypeError(f"expected NAME=1x3x224x224, got {text!r}")
    return name, shape


DESKTOP_COMMANDS: dict[str, str] = {
    "fit": "tools.fit.cli",
    "export": "tools.export.cli",
    "quantize": "tools.quantize.cli",
    "evaluate": "tools.evaluate.cli",
    "bundle": "tools.bundle_cli",
}
DESKTOP_HELP: dict[str, str] = {
    "fit": "train an anomaly model from normal recordings into a bundle",
    "export": "export a PyTorch / scikit-learn / Keras model to ONNX or TFLite, verified",
    "quantize": "quantize a model to int8; refuse one that lost accuracy or speed",
    "evaluate": "compare a model and its quantized version on a labelled set",
    "bundle": "write (and optionally sign) a model bundle",
}
"""Subcommands implemented by the desktop ``tools`` package: ``edgewatch <cmd>`` runs
``<module>.main(argv)``; devices without the tools extra get a clear message instead."""


def _desktop(command: str, argv: list[str]) -> int:
    module_name = DESKTOP_COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        print(
            f"edgewatch {command} needs the desktop tools ({missing} is missing): "
            "pip install 'edgewatch[tools]'",
            file=sys.stderr,
        )
        return 2
    code: int = module.main(argv)
    return code


def _cmd_run(args: argparse.Namespace) -> int:
    from runtime.app import App

    try:
        loaded = load_config(args.config)
    except EdgewatchError as exc:
        print(f"edgewatch: cannot start: {exc}", file=sys.stderr)
        return 1
    _setup_logging(args.log_level or loaded.config.logging.level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        app = App.from_config(loaded)
    except EdgewatchError as exc:
        print(f"edgewatch: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        app.start()
    except EdgewatchError as exc:
        app.stop()
        print(f"edgewatch: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        app.run_until(stop, args.duration)
    finally:
        app.stop()
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from runtime.record import build_recorder, open_recording

    _setup_logging(args.log_level)
    problem = _record_problem(args)
    if problem is not None:
        print(f"edgewatch record: {problem}", file=sys.stderr)
        return 2
    try:
        settings, password = _record_settings(args)
        out = open_recording(args.file)
    except EdgewatchError as exc:
        print(f"edgewatch record: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    def on_subscribed() -> None:
        print(
            f"edgewatch record: recording {args.topic} from {settings.host}:{settings.port} "
            f"to {args.file} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with out:
        try:
            recorder = build_recorder(
                settings, password, out, args.topic, qos=args.qos, count=args.count
            )
            recorder.on_subscribed = on_subscribed
            recorder.start()
        except EdgewatchError as exc:
            print(f"edgewatch record: {exc}", file=sys.stderr)
            return 1
        try:
            summary = recorder.wait(stop, args.seconds)
        finally:
            recorder.stop()
    print(f"recorded {summary.messages} messages ({summary.payload_bytes} bytes) to {args.file}")
    if summary.error is not None:
        print(f"edgewatch record: {summary.error}", file=sys.stderr)
        return 1
    return 0


def _record_problem(args: argparse.Namespace) -> str | None:
    from runtime.mqtt_settings import check_topic_filter

    if args.config is not None and (args.host is not None or args.port is not None):
        return "give --config or --host/--port, not both"
    if args.port is not None and not 1 <= args.port <= 65535:
        return f"--port must be 1-65535, got {args.port}"
    if args.count is not None and args.count < 1:
        return f"--count must be >= 1, got {args.count}"
    if args.seconds is not None and args.seconds <= 0:
        return f"--seconds must be > 0, got {args.seconds}"
    try:
        check_topic_filter(args.topic)
    except ValueError as exc:
        return str(exc)
    return None


def _record_settings(args: argparse.Namespace) -> tuple[MqttSettings, str | None]:
    """The broker settings and password: the config's ``mqtt`` section, or --host/--port."""
    from runtime.mqtt_settings import MqttSettings

    if args.config is None:
        return MqttSettings(host=args.host or "127.0.0.1", port=args.port or 1883), None
    loaded = load_config(args.config)
    if loaded.config.mqtt is None:
        raise ConfigError(f"{args.config}: no `mqtt` section to take the broker from")
    secret = loaded.secrets.mqtt_password
    return loaded.config.mqtt, None if secret is None else secret.get_secret_value()


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
