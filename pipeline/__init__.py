"""CIFAR AutoML comparison pipeline: DVC stages, KerasTuner searches, MLflow tracking."""

__version__ = "0.1.0"
