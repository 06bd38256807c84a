"""tfdense: efficient CIFAR-10 DenseNets, from training to full-int8 TFLite.

TF-MOT only works with Keras 2, so the legacy-Keras switch is forced here, before
anything can import TensorFlow; users never have to set it themselves.
"""

import os
import sys
import warnings

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    warnings.warn(
        "TensorFlow was imported before tfdense, so tf.keras may be Keras 3; tfdense builds its "
        "models with tf_keras, but import tfdense first (or set TF_USE_LEGACY_KERAS=1) so that "
        "your own tf.keras code uses the same Keras",
        RuntimeWarning,
        stacklevel=2,
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter (CPU feature notices, oneDNN banners) drowns the progress bar.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
