"""The model families: each a builder from a full hyperparameter dict plus its defaults."""

from pipeline.models.cnn import CNN_DEFAULTS, build_cnn
from pipeline.models.fc import FC_DEFAULTS, build_fc

FAMILIES = {
    "cnn": (build_cnn, CNN_DEFAULTS),
    "fc": (build_fc, FC_DEFAULTS),
}
