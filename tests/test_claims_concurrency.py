"""Two graders claiming from the same queue at the same moment, each on its own database
connection: on PostgreSQL (SELECT ... FOR UPDATE SKIP LOCKED) they never receive the same image when
each image needs only one grade."""

from __future__ import annotations

import threading
import unittest

from django.db import connection
from django.test import TransactionTestCase

from grading.models import Image
from grading.services.claims import claim_next
from tests.base import MediaMixin
from tests.factories import image_make, user_make
from tests.factories_grading import MigrationDataKeptMixin, workbench_set

IMAGES = 12
ROUNDS = 3


@unittest.skipUnless(
    connection.vendor == "postgresql",
    "row locks (SELECT ... FOR UPDATE SKIP LOCKED) need PostgreSQL; SQLite serialises whole "
    "transactions instead. CI runs this test on PostgreSQL.",
)
class ConcurrentClaimTests(MigrationDataKeptMixin, MediaMixin, TransactionTestCase):
    def _race(self, graders) -> dict[str, list[int]]:
        """Each grader claims images as fast as it can until the queue is empty."""
        served: dict[str, list[int]] = {grader.username: [] for grader in graders}
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(graders))

        def work(grader) -> None:
            try:
                barrier.wait(timeout=10)
                while True:
                    mine = served[grader.username]
                    # Not grading: holding each claim while moving on is the worst case.
                    image = claim_next(grader=grader, order="oldest", exclude_ids=mine)
                    if image is None:
                        return
                    mine.append(image.pk)
            except BaseException as error:  # reported in the main thread
                errors.append(error)
            finally:
                connection.close()  # each thread had its own connection

        threads = [threading.Thread(target=work, args=(grader,)) for grader in graders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        self.assertFalse(errors, errors)
        return served

    def test_it_never_serves_one_image_to_two_graders(self):
        alice = user_make("alice", "clinician")
        bob = user_make("bob", "clinician")
        workbench_set(grades_required=1, claim_minutes=10)
        for round_number in range(ROUNDS):
            with self.subTest(round=round_number):
                image_ids = {image_make().pk for _ in range(IMAGES)}
                served = self._race([alice, bob])
                alice_ids, bob_ids = set(served["alice"]), set(served["bob"])
                self.assertEqual(alice_ids & bob_ids, set())
                self.assertEqual(alice_ids | bob_ids, image_ids)
                self.assertEqual(len(served["alice"]) + len(served["bob"]), IMAGES)
                # Take this round's images out of the queue so the next round starts afresh.
                Image.objects.filter(pk__in=image_ids).update(grading_state="adjudication")

    def test_it_serves_each_image_to_both_when_two_grades_are_needed(self):
        alice = user_make("alice", "clinician")
        bob = user_make("bob", "clinician")
        workbench_set(grades_required=2)
        image_ids = {image_make().pk for _ in range(IMAGES)}
        served = self._race([alice, bob])
        self.assertEqual(set(served["alice"]), image_ids)
        self.assertEqual(set(served["bob"]), image_ids)
