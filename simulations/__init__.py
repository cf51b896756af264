"""Experiments: Hydra configuration, engines, the `flowerbed` command, reports and benchmarks."""
