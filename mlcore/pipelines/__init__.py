"""What the command line and the Celery tasks run: training with an honest hold-out and grouped
cross-validation, prediction on new photographs, class activation maps."""
