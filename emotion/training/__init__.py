"""Training the bundled model (python -m emotion.training). Never imported by the app or the core."""
