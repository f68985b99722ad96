"""Command line: ``streamer run``, ``streamer restore``, ``streamer models``, ``streamer validate-config``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engines import shipped_models
from streamer import __version__
from streamer.cli_streams import add_streams_parser, cmd_streams
from streamer.config import (
    AppConfig,
    ConfigError,
    ExposureConfig,
    apply_env_overrides,
    build_config,
    load_config_file,
    read_config_data,
    source_from_argument,
)
from streamer.jobs.cli import add_jobs_parser, cmd_jobs
from streamer.sharding import restrict, shard_from

log = logging.getLogger("streamer")

ENGINES = ["auto", "cpu", "tensorrt", "cuda", "passthrough"]


def odd_window(text: str) -> int:
    """argparse type of --window: an odd number of frames (the frame being restored sits in a window)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an odd whole number of frames (1, 3, 5, ...), got {text!r}") from None
    if value < 1 or value % 2 == 0 or value > 15:
        raise argparse.ArgumentTypeError(f"must be an odd number of frames from 1 to 15 (1, 3, 5, ...), got {value}")
    return value


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, help="restoration backend (default: auto)")
    parser.add_argument("--model", help=f"shipped model name ({', '.join(shipped_models())}; see `streamer models`) "
                        "or ONNX file (default: lite)")
    parser.add_argument("--threads", type=int, help="CPU inference threads (default: all cores)")
    parser.add_argument("--float", dest="int8", action="store_false", default=None,
                        help="CPU: run the float model even where an int8 twin (NAME.int8.onnx) exists")
    parser.add_argument("--window", type=odd_window, metavar="N", help="frames per temporal window, odd (default: model's)")
    parser.add_argument("--lookahead", type=int, metavar="K",
                        help="future frames to wait for: 0 = causal, (N-1)/2 = centred (default: model's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Real-time restoration of live video: RTSP in, temporal neural restoration, RTSP out.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="restore live sources and serve them over RTSP",
                         description="Restore a camera (or the built-in demo) and serve it at rtsp://HOST:PORT/NAME.")
    run.add_argument("source", nargs="?",
                     help="rtsp://[user:pass@]camera/stream, a video file, or 'demo' (omit with --config)")
    run.add_argument("--config", metavar="FILE", help="YAML configuration (several cameras, sinks, auth)")
    run.add_argument("--name", help="stream path for a single source (default: restored)")
    run.add_argument("--host", help="address the RTSP and HTTP servers listen on (default: 0.0.0.0, all)")
    run.add_argument("--rtsp-port", type=int, help="RTSP server port (default: 8554)")
    run.add_argument("--http-port", type=int, help="HTTP server port for /healthz and /metrics (default: 8080)")
    run.add_argument("--transport", choices=["tcp", "udp"], help="RTP transport asked of an RTSP camera")
    run.add_argument("--record", metavar="FILE", help="also record the restored stream to FILE (.mkv/.mp4)")
    run.add_argument("--publish", metavar="URL", help="also push the restored stream to rtsp://server/path")
    run.add_argument("--taps", action="store_true",
                     help="publish every camera's raw and restored frames over ZeroMQ (PUB bound on "
                          "tcp://127.0.0.1:5555, topics CAMERA/raw and CAMERA/restored; see README 'Frame taps')")
    run.add_argument("--exposure", action="store_true",
                     help="brighten dark scenes after restoration (night cameras; README 'Exposure correction')")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--config-writeback", action="store_true",
                     help="save cameras added, changed or removed over the API to the --config file (atomically)")
    run.add_argument("--shard", metavar="I/N|auto", help="run only shard I of N's cameras of the config "
                     "(auto: I from the host name's -ORDINAL, N from STREAMER_SHARDS; default: $STREAMER_SHARD)")
    run.add_argument("--shard-pin", action="append", metavar="NAME=I", help="run camera NAME on shard I (repeatable; "
                     "also STREAMER_SHARD_PINS=NAME=I,...)")
    _add_engine_options(run)

    restore = sub.add_parser("restore", help="restore a video file (every frame through the full model)",
                             description="Restore INPUT into OUTPUT frame by frame, with a progress bar.")
    restore.add_argument("input", help="input video file")
    restore.add_argument("output", help="output file (.mp4/.mkv; .mkv with --lossless)")
    restore.add_argument("--lossless", action="store_true", help="write lossless FFV1 (RGB) for evaluation")
    restore.add_argument("--crf", type=int, default=16, help="libx264 CRF of a lossy output (default: 16)")
    restore.add_argument("--exposure", action="store_true", help="brighten dark scenes after restoration (the "
                         "camera setting's defaults; README 'Exposure correction')")
    _add_engine_options(restore)

    sub.add_parser("models", help="list the shipped restoration models (names for --model / engine.model)")

    validate = sub.add_parser("validate-config", help="check a YAML configuration and print it resolved")
    validate.add_argument("file", help="YAML configuration file")
    add_streams_parser(sub)
    add_jobs_parser(sub)
    return parser


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> AppConfig:
    """The configuration of ``streamer run``: the file (or the SOURCE argument), then the environment's
    ``STREAMER__…`` overrides, then the command line's options, which win."""
    if args.config:
        if args.source:
            raise ConfigError("give either a SOURCE or --config, not both")
        data = read_config_data(args.config)
    elif args.source:
        data = {"cameras": [{"name": args.name or "restored", "source": source_from_argument(args.source)}]}
    else:
        raise ConfigError("nothing to run: give a SOURCE (rtsp://..., a file, or 'demo') or --config FILE")
    data = apply_env_overrides(data, os.environ if environ is None else environ)
    server = data.get("server") if isinstance(data.get("server"), dict) else None
    server = data.setdefault("server", {}) if server is None else server
    for key, value in (("host", args.host), ("port", args.rtsp_port)):
        if value is not None:
            _section(server, "rtsp")[key] = value
    for key, value in (("host", args.host), ("port", args.http_port)):
        if value is not None:
            _section(server, "http")[key] = value
    if args.log_level:
        data["log_level"] = args.log_level
    cameras = data.get("cameras")
    for camera in cameras if isinstance(cameras, list) else []:
        if not isinstance(camera, dict):
            continue  # validation names it
        engine = _section(camera, "engine")
        window = _section(camera, "window")
        for key, value in (("type", args.engine), ("model", args.model), ("threads", args.threads),
                           ("int8", args.int8)):
            if value is not None:
                engine[key] = value
        for key, value in (("size", args.window), ("lookahead", args.lookahead)):
            if value is not None:
                window[key] = value
        source = camera.get("source")
        if args.transport and isinstance(source, dict) and source.get("type") == "rtsp":
            source["transport"] = args.transport
        if args.taps:
            _section(camera, "taps")["enabled"] = True
        if args.exposure:
            _section(camera, "exposure")["enabled"] = True
        sinks = camera.setdefault("sinks", [])
        if args.record:
            sinks.append({"type": "file", "path": args.record})
        if args.publish:
            sinks.append({"type": "rtsp_publish", "url": args.publish})
    return build_config(data, environ={})


def _section(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    """``mapping[key]`` as a mapping to write into (created when absent; left alone, for validation to
    report, when it is something else)."""
    value = mapping.setdefault(key, {})
    return value if isinstance(value, dict) else {}


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("libav").setLevel(logging.ERROR)


def cmd_run(args: argparse.Namespace) -> int:
    from streamer.app import ListenError, StartupError, run_app

    config = config_from_args(args)
    if args.config_writeback and not args.config:
        raise ConfigError("--config-writeback needs --config FILE (the file that changes are saved to)")
    entries = read_config_data(args.config).get("cameras") if args.config else None
    _setup_logging(config.log_level)
    config = restrict(config, shard_from(args.shard, args.shard_pin, os.environ), writeback=args.config_writeback)
    try:
        run_app(config, entries if isinstance(entries, list) else None,
                Path(args.config) if args.config_writeback else None)
    except ListenError as error:  # a port taken by another process: one clear line, not a traceback
        print(f"streamer: {error}", file=sys.stderr)
        return 2
    except StartupError as error:  # no camera can work as configured: say which field, exit 2
        print(f"streamer: cannot start:\n{error}", file=sys.stderr)
        return 2
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from engines import activate_engine
    from streamer.restore_file import FileRestorer

    _setup_logging("info")
    source, target = Path(args.input), Path(args.output)
    if not source.is_file():
        raise ConfigError(f"input file not found: {source}")
    if not target.parent.is_dir():
        raise ConfigError(f"output folder does not exist: {target.parent} (create it first)")
    if target.resolve() == source.resolve():
        raise ConfigError("the output would overwrite the input: choose another output file")
    engine = activate_engine(args.engine or "auto", args.model, args.threads or 0, int8=args.int8 is not False)
    with engine:
        restorer = FileRestorer(engine, lossless=args.lossless, crf=args.crf, window_size=args.window,
                                lookahead=args.lookahead, exposure=ExposureConfig(enabled=args.exposure))
        count = restorer.run(source, target)
    log.info("restored %d frames with %s into %s", count, engine.describe(), target)
    return 0


def cmd_models(_args: argparse.Namespace) -> int:
    from engines import MODELS_DIR, int8_twin
    from engines.onnx_cpu import read_model_info

    names = shipped_models()
    width = max([len("name"), *map(len, names)])
    print(f"{'name':<{width}} {'window':>6} {'lookahead':>9} {'latency':>14}  {'int8 twin':<9}  {'state':<9}  "
          f"{'output':<6}  file")
    for name in names:
        path = MODELS_DIR / f"{name}.onnx"  # the package's file, never a same-named file in the working directory
        info = read_model_info(path)
        latency = f"+{info.lookahead} frame(s)" if info.lookahead else "none (causal)"
        twin = "yes" if int8_twin(path) != path else "no"
        state = "recurrent" if info.recurrent else "-"
        output = f"x{info.scale}" if info.scale > 1 else "same"  # an upscaling model's output size
        print(f"{name:<{width}} {info.window:>6} {info.lookahead:>9} {latency:>14}  {twin:<9}  {state:<9}  "
              f"{output:<6}  {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from streamer.redact import redact_config

    config = load_config_file(args.file)
    resolved = redact_config(config.model_dump(mode="json"))  # complete, but passwords and tokens as '***'
    print(yaml.safe_dump(resolved, sort_keys=False), end="")
    print(f"# {args.file}: valid ({len(config.cameras)} camera(s))", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from engines import EngineError

    args = build_parser().parse_args(argv)
    commands = {"run": cmd_run, "restore": cmd_restore, "models": cmd_models, "validate-config": cmd_validate,
                "streams": cmd_streams, "jobs": cmd_jobs}
    try:
        return commands[args.command](args)
    except (ConfigError, EngineError, ValueError) as error:
        print(f"streamer: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not fail again
        return 0
