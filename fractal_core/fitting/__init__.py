"""Training: typed settings, bags on a device, the scorer, the training loop, the methods, auto, the estimator facade and the job pipeline."""
