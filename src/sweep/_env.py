"""What a sweep hands its jobs and local helper workers through the environment."""

# The storage URL: the environment, never a file or a command line (the URL may hold a password).
STORAGE_ENV = "SWEEP_OPTUNA_STORAGE"
# Set for the local helper workers a sweep starts (hydra.sweeper.n_jobs): their number.
WORKER_ENV = "SWEEP_WORKER"
