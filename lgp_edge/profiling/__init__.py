"""Profiling: latency of descendants on targets, measured (here, over SSH or adb) or predicted.

Entry points other stages use: ``targets.load_target``, ``store.MeasurementStore`` and
``predict.latencies_for`` (measured record when stored, else a prediction that says so).
"""
