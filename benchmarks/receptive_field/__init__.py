"""Receptive fields of a module: analytic from its ``torch.fx`` graph (:mod:`.analytic`, with the
per-op rules of :mod:`.layer_rules` and the probes of :mod:`.probe`), effective (:mod:`.effective`,
Luo et al. 2016), and Yu & Koltun's dilated stacks (:mod:`.stacks`). The tests measure fields
empirically (``tests/measured_receptive_field.py``) to check the analytic ones."""

from benchmarks.receptive_field.analytic import analytic_geometry, receptive_field, unit_receptive_field
from benchmarks.receptive_field.effective import effective_receptive_field
from benchmarks.receptive_field.layer_rules import GLOBAL, Geometry, LayerGeometry, Unbounded
from benchmarks.receptive_field.stacks import dilated_stack, stack_table

__all__ = [
    "GLOBAL",
    "Geometry",
    "LayerGeometry",
    "Unbounded",
    "analytic_geometry",
    "dilated_stack",
    "effective_receptive_field",
    "receptive_field",
    "stack_table",
    "unit_receptive_field",
]
