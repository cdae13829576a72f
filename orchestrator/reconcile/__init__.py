"""Reconcile: observe the kernel (snapshot.py holds what was seen), diff it against the desired
state (diff.py, each resource kind in kinds/), apply by phase (engine.py), remember what must
survive a restart (state.py), take it all down (teardown.py). The same call serves `up`,
adoption after a restart, healing, `status` and `explain` (dry runs)."""
