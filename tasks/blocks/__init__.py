"""The building blocks the stages share: the params schema, data files, models, generation, rewards, statistics, the
toy world, MLflow tracking, launching, the stage runner. A block never imports a stage module (tests/test_layout.py)."""
