"""``tidal models ...``: the model registry and compression from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from tidal.errors import ConfigError

if TYPE_CHECKING:
    pass
from tidal.cli.options import (
    _flag,
    _Option,
    _positive,
    _text,
)


# -- models: the registry and compression ---------------------------------------------------
def _choice(*allowed: str) -> Callable[[str], str]:
    def choice(text: str) -> str:
        if text not in allowed:
            msg = f"expected one of {', '.join(allowed)}, got {text!r}"
            raise ValueError(msg)
        return text

    return choice


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"expected a number, got {text!r}"
        raise ValueError(msg) from None
    if value < 0:
        msg = f"expected a number >= 0, got {text!r}"
        raise ValueError(msg)
    return value


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


_REGISTRY = _Option(
    "--registry", _text, None, "the model registry directory (default: <data dir>/registry)", "DIR"
)
_MODELS_JSON = _Option("--json", _flag, False, "print JSON on stdout", is_flag=True)
_METHOD = _Option(
    "--method",
    _choice("int8-dynamic", "int8-static", "prune", "torch-to-onnx"),
    None,
    "int8-dynamic, int8-static, prune or torch-to-onnx (required)",
    "METHOD",
)
_EVAL = _Option("--eval", _text, None, "evaluation set: .npz (X, y) or .parquet (required)", "FILE")


@dataclass(frozen=True)
class _OwnEnvOption(_Option):
    """An option whose environment variable is not ``TIDAL_<FLAG>``.

    For a flag whose name another command uses with another meaning: ``tidal demo --out``
    reads ``TIDAL_OUT``, and setting it for the demo must not move compressed models.
    """

    env_var: str = ""

    @property
    def env(self) -> str:
        return self.env_var


_DST = _OwnEnvOption(
    "--out",
    _text,
    None,
    "where the compressed model goes (required)",
    "DST",
    env_var="TIDAL_COMPRESS_OUT",
)
_CALIBRATION = _Option(
    "--calibration",
    _text,
    None,
    "int8-static calibration sample, .npz (X) or .parquet (default: 512 evaluation rows)",
    "FILE",
)
_MAX_DROP = _Option(
    "--max-accuracy-drop",
    _share,
    0.005,
    "refuse a model whose metric drops more (for mae: whose error grows more)",
    "X",
)
_METRIC = _Option("--metric", _choice("accuracy", "mae"), "accuracy", "accuracy or mae", "NAME")
_ARCH = _Option(
    "--arch", _text, None, "PyTorch architecture of a state dict: package.module:factory", "SPEC"
)
_AMOUNT = _Option("--amount", _share, 0.5, "fraction of weights prune sets to zero", "X")
_LABEL = _Option("--label", _text, "label", "Parquet column with the true values", "COLUMN")
_FEATURES = _Option(
    "--features",
    _names,
    None,
    "Parquet feature columns, comma-separated (default: the rest)",
    "A,B",
)
_OUTPUT = _Option("--output", _text, None, "the model output the metric judges", "NAME")
_THREADS = _Option("--threads", _positive, 1, "threads per model while timing", "N")
_REGISTER_AS = _Option(
    "--register", _text, None, "register the compressed model under this name if it passes", "NAME"
)
_SIGNATURE = _Option(
    "--signature",
    _text,
    None,
    "input columns: a,b,c, a JSON object like signature.json, or a JSON file",
    "S",
)
_METRICS = _Option("--metrics", _text, None, "metrics: a JSON object or a JSON file", "JSON")
_PARENT = _Option("--parent", _positive, None, "the version this one derives from", "N")
_COMPRESSION = _Option("--compression", _text, None, "the compression applied", "METHOD")
_DATA_RANGE = _Option(
    "--data-range", _text, None, "the training data's range, FROM..TO", "FROM..TO"
)
_PROMOTE = _Option("--promote", _flag, False, "promote the new version at once", is_flag=True)
_FRACTION = _Option("--fraction", _share, 0.1, "fraction of keys the canary scores", "F")


def _add_models(commands: Any) -> None:
    models = commands.add_parser(
        "models",
        help="model registry and compression",
        description="Compress models with an accuracy gate; register, promote, roll back, "
        "shadow and canary versions in the model registry.",
    )
    sub = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")

    def leaf(
        name: str,
        help_text: str,
        handler: Callable[[argparse.Namespace], int],
        options: tuple[_Option, ...],
        *positional: tuple[str, str],
    ) -> None:
        p = sub.add_parser(name, help=help_text, description=help_text)
        for arg, text in positional:
            p.add_argument(arg, help=text)
        for opt in (*options, _REGISTRY, _MODELS_JSON):
            opt.add_to(p)
        p.set_defaults(handler=handler, options=(*options, _REGISTRY, _MODELS_JSON))

    leaf(
        "compress",
        "compress a model, compare it with the original on an evaluation set, and write it "
        "only if the accuracy gate passes (exit status 3 if not)",
        _models_compress,
        (
            _METHOD,
            _EVAL,
            _DST,
            _CALIBRATION,
            _MAX_DROP,
            _METRIC,
            _ARCH,
            _AMOUNT,
            _LABEL,
            _FEATURES,
            _OUTPUT,
            _THREADS,
            _REGISTER_AS,
        ),
        ("src", "the model: an .onnx file, or a PyTorch state dict with --arch"),
    )
    leaf("list", "list the registered models and their stages", _models_list, ())
    leaf(
        "show",
        "show a model version (default: production)",
        _models_show,
        (),
        ("model", "NAME or NAME:VERSION"),
    )
    leaf(
        "register",
        "add a model file as the next version",
        _models_register,
        (_NAME_OPT, _SIGNATURE, _METRICS, _PARENT, _COMPRESSION, _DATA_RANGE, _ARCH, _PROMOTE),
        ("file", "the model file (.onnx, .skops, .pt)"),
    )
    leaf(
        "promote",
        "make VERSION the production version",
        _models_promote,
        (),
        ("name", "the model"),
        ("version", "the version (3 or v3)"),
    )
    leaf(
        "rollback",
        "put the previous production version back",
        _models_rollback,
        (),
        ("name", "the model"),
    )
    leaf(
        "shadow",
        "score VERSION in shadow next to production ('off' to stop)",
        _models_shadow,
        (),
        ("name", "the model"),
        ("version", "the version, or off"),
    )
    leaf(
        "canary",
        "route a fraction of keys to VERSION ('off' to stop)",
        _models_canary,
        (_FRACTION,),
        ("name", "the model"),
        ("version", "the version, or off"),
    )


_NAME_OPT = _Option("--name", _text, None, "the model's name (required)", "NAME")


def _registry(args: argparse.Namespace) -> Any:
    from tidal.ml.registry import Registry

    return Registry(args.registry)


def _required(args: argparse.Namespace, *opts: _Option) -> None:
    for opt in opts:
        if getattr(args, opt.dest) is None:
            msg = f"{opt.flag} is required (or set {opt.env})"
            raise ConfigError(msg)


def _json_arg(text: str, what: str) -> Any:
    path = Path(text)
    raw = path.read_text(encoding="utf-8") if path.is_file() else text
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = f"{what} must be JSON or a JSON file, got {text!r}: {exc}"
        raise ConfigError(msg) from None


def _print_json(data: Any, *, indent: bool) -> None:
    opt = orjson.OPT_INDENT_2 if indent else 0
    sys.stdout.write(orjson.dumps(data, default=str, option=opt).decode() + "\n")


def _models_compress(args: argparse.Namespace) -> int:
    from tidal.ml.compress import CompressionRefused, EvalSet, compress, read_features
    from tidal.ml.registry import Lineage

    _required(args, _METHOD, _EVAL, _DST)
    feats = args.features or ()
    eval_set = EvalSet.load(args.eval, label=args.label, features=feats)
    calibration = None
    if args.calibration:
        calibration = read_features(args.calibration, label=args.label, features=feats)
    try:
        report = compress(
            args.src,
            args.out,
            method=args.method,
            eval_set=eval_set,
            calibration=calibration,
            metric=args.metric,
            max_accuracy_drop=args.max_accuracy_drop,
            arch=args.arch,
            amount=args.amount,
            output=args.output,
            threads=args.threads,
        )
    except CompressionRefused as exc:
        if args.json:
            _print_json(exc.report.to_json(), indent=False)
        else:
            print(exc.report.table())
        print(f"tidal: refused: {exc}", file=sys.stderr)
        return 3
    result = report.to_json()
    if args.register:
        lineage = Lineage(compression=args.method, extra={"source_model": str(args.src)})
        mv = _registry(args).register(
            args.out, name=args.register, metrics=report.metrics(), lineage=lineage
        )
        result["registered"] = {"name": mv.name, "version": mv.version}
    if args.json:
        _print_json(result, indent=False)
    else:
        print(report.table())
        if args.register:
            print(f"registered as {args.register} v{result['registered']['version']}")
    return 0


def _stages_line(name: str, stages: Any) -> str:
    prod = "-" if stages.production is None else f"v{stages.production}"
    prev = ",".join(f"v{v}" for v in stages.previous) or "-"
    shadow = "-" if stages.shadow is None else f"v{stages.shadow}"
    canary = (
        "-"
        if stages.canary is None
        else f"v{stages.canary.version} ({stages.canary.fraction:g} of keys)"
    )
    return f"{name}: production {prod}, previous {prev}, shadow {shadow}, canary {canary}"


def _models_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    rows = []
    for name in reg.models():
        versions = [v.version for v in reg.versions(name)]
        rows.append({"name": name, "versions": versions, "stages": reg.stages(name).to_dict()})
    if args.json:
        _print_json({"registry": str(reg.root), "models": rows}, indent=False)
        return 0
    if not rows:
        print(f"no models in {reg.root}")
    for row in rows:
        listed = ",".join(f"v{v}" for v in row["versions"])
        print(f"{_stages_line(row['name'], reg.stages(row['name']))}; versions {listed}")
    return 0


def _models_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    name, _, version = args.model.partition(":")
    mv = reg.get(name, version or None)
    data = mv.to_dict()
    data["stages"] = reg.stages(name).to_dict()
    _print_json(data, indent=not args.json)
    return 0


def _models_register(args: argparse.Namespace) -> int:
    from tidal.ml.registry import Lineage

    _required(args, _NAME_OPT)
    reg = _registry(args)
    signature: Any = None
    if args.signature:
        text = args.signature.strip()
        if text.startswith("{") or Path(text).is_file():
            signature = _json_arg(text, "--signature")
        else:
            signature = _names(text)
    metrics = _json_arg(args.metrics, "--metrics") if args.metrics else None
    data_range = None
    if args.data_range:
        lo, sep, hi = args.data_range.partition("..")
        if not sep:
            msg = f"--data-range is FROM..TO, got {args.data_range!r}"
            raise ConfigError(msg)
        data_range = (lo, hi)
    lineage = Lineage(
        data_range=data_range,
        parent=args.parent,
        compression=args.compression,
        extra={"arch": args.arch} if args.arch else {},
    )
    mv = reg.register(
        args.file, name=args.name, signature=signature, metrics=metrics, lineage=lineage
    )
    stages = reg.promote(mv.name, mv.version) if args.promote else reg.stages(mv.name)
    if args.json:
        _print_json({**mv.to_dict(), "stages": stages.to_dict()}, indent=False)
    else:
        print(f"registered {mv.name} v{mv.version} in {mv.path}")
        print(_stages_line(mv.name, stages))
    return 0


def _stage_result(args: argparse.Namespace, name: str, stages: Any) -> int:
    if args.json:
        _print_json({"name": name, "stages": stages.to_dict()}, indent=False)
    else:
        print(_stages_line(name, stages))
    return 0


def _off(text: str) -> str | None:
    return None if text.strip().lower() in ("off", "none", "-") else text


def _models_promote(args: argparse.Namespace) -> int:
    return _stage_result(args, args.name, _registry(args).promote(args.name, args.version))


def _models_rollback(args: argparse.Namespace) -> int:
    return _stage_result(args, args.name, _registry(args).rollback(args.name))


def _models_shadow(args: argparse.Namespace) -> int:
    stages = _registry(args).shadow(args.name, _off(args.version))
    return _stage_result(args, args.name, stages)


def _models_canary(args: argparse.Namespace) -> int:
    stages = _registry(args).canary(args.name, _off(args.version), fraction=args.fraction)
    return _stage_result(args, args.name, stages)
