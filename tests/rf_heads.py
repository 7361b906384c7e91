"""The user heads of test_receptive_field_heads.py, registered as a user's module registers them:
``python -m benchmarks list --import rf_heads`` (never imported by the test process itself)."""

from test_receptive_field_heads import USER_HEADS

import methods

for name, builder in USER_HEADS.items():
    methods.register(name, paper="a test head")(builder)
