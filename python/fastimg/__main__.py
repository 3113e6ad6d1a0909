"""`python -m fastimg`: which kernel backend this machine uses, and why."""

from . import backends

info = backends()
print(f"fastimg kernels: {info.describe()}")
print(f"available backends: {', '.join(info.available)}; CUDA compiled in: {info.cuda_compiled}")
