"""The feature manifest (which shard in the object storage holds which image's features) and
the chunks a distributed extraction is split into."""

from __future__ import annotations

from django.db import models

from grading.models.jobs import Job


class FeatureShardRow(models.Model):
    """One image's features of one backbone x preprocessing x dtype (``config_key``): row
    ``row`` of the HDF5 shard ``shard`` in the object storage.

    The manifest lives here, not in a shared HDF5 file: each shard has exactly one writer (the
    chunk task that extracted it, under a fresh random name), and its rows become visible only
    once it is uploaded, by an INSERT that ignores keys already present. The unique constraint
    makes "every image's features present exactly once" hold whatever the retries: a chunk
    redelivered after its worker died may upload a second shard, but its keys are not added
    twice.
    """

    config_key = models.CharField(max_length=200)
    key = models.CharField(max_length=80)  # mlcore.features.store.feature_key: sha256[#v<k>]
    shard = models.CharField(max_length=300)
    row = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["config_key", "key"], name="feature_once_per_config")
        ]
        indexes = [models.Index(fields=["config_key", "shard"])]

    def __str__(self) -> str:
        return f"{self.config_key} {self.key[:12]} -> {self.shard}[{self.row}]"


class FeatureChunk(models.Model):
    """One share of a job's feature extraction: the images it extracts (their ids) and who ran
    it. The job's progress counts the chunks done."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="feature_chunks")
    index = models.PositiveIntegerField()
    image_ids = models.JSONField(default=list)
    # The features it extracts: mlcore's FeatureConfig as a dict (backbones, preprocessing,
    # dtype, batch size), fixed when the job split its work.
    feature_config = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    worker = models.CharField(max_length=255, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    computed = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="feature_chunk_once_per_job")
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} chunk {self.index} ({self.state})"
