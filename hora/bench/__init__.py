"""Benchmarks, each a ``python -m hora bench ...`` command that measures side by side in one run:

- ``sample_efficiency``: held-out metric against training-set size, every method, 95% intervals over seeds;
- ``speed``: training step time, memory and inference latency of HoRA and DoRAN against PEFT's LoRA and DoRA,
  eager and through ``torch.compile``;
- ``ops``: operator calls per training step, HoRA against LoRA and DoRAN against DoRA (what a launch-bound GPU pays);
- ``side_by_side`` (``bench side-by-side``): several adapters in one forward pass (``hora.mixed``) vs one call each;
- ``coldstart`` (``bench cold-start``) and ``load`` (``bench load``): the explorer started in a fresh process and
  driven from outside, by headless Chromium and by concurrent ``gradio_client`` users.

    >>> from hora import bench
    >>> report = bench.sample_efficiency("runs/vit", "digits.zip", methods=["lora", "hora"], out_dir="runs/se")
    >>> report = bench.speed("runs/vit", out_dir="runs/speed")
    >>> print(bench.speed_table(report))

Reports are JSON (and a plotly figure: HTML, plus PNG when ``kaleido`` is installed), written through
``hora.io.atomic_dir``. Timings are medians over rounds that visit every method in turn (round-robin, after
warm-up), so slow drifts of the machine hit every method alike.
"""

from hora.bench import side_by_side
from hora.bench.ops import ops, ops_table
from hora.bench.sample_efficiency import sample_efficiency
from hora.bench.speed import REFERENCE_MODELS, reference_model, speed, speed_table
from hora.bench.stats import mean_ci, t_quantile_975


__all__ = [
    "REFERENCE_MODELS",
    "mean_ci",
    "ops",
    "ops_table",
    "reference_model",
    "sample_efficiency",
    "side_by_side",
    "speed",
    "speed_table",
    "t_quantile_975",
]
