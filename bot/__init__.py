"""aftercare: a Telegram assistant that clinics give their patients after aesthetic treatments."""

import os

# Per-message vector work is tiny: one BLAS thread is fastest and keeps results bit-for-bit
# deterministic; more threads only contend with the event loop (set before numpy is imported).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
