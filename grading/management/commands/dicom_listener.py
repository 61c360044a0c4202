from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from grading.services.dicom_receiver import dicom_listener_start


class Command(BaseCommand):
    help = (
        "Receive DICOM Ophthalmic Photography from fundus cameras and PACS (a C-STORE SCP). "
        "Only the calling AE titles in FUNDUS_DICOM_ALLOWED_AES may send; each association is a "
        "job on /jobs/. Runs until interrupted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=settings.FUNDUS_DICOM_PORT)
        parser.add_argument("--ae-title", default=settings.FUNDUS_DICOM_AE_TITLE)
        parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
        parser.add_argument(
            "--allowed-aes",
            default=",".join(settings.FUNDUS_DICOM_ALLOWED_AES),
            help="comma-separated calling AE titles (default: FUNDUS_DICOM_ALLOWED_AES)",
        )

    def handle(
        self, *args, port: int, ae_title: str, host: str, allowed_aes: str, **options
    ) -> None:
        allowed = [title.strip() for title in allowed_aes.split(",") if title.strip()]
        if not 0 < len(ae_title.strip()) <= 16:
            raise CommandError(f"--ae-title {ae_title!r} must be 1-16 characters")
        if not allowed:
            raise CommandError(
                "No calling AE title is allowed: set FUNDUS_DICOM_ALLOWED_AES (or --allowed-aes) "
                "to the AE titles of the cameras and PACS that may send photographs."
            )
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        self.stdout.write(
            f"DICOM listener {ae_title} on {host}:{port}; accepting from {', '.join(allowed)}"
        )
        try:
            dicom_listener_start(
                host=host, port=port, ae_title=ae_title, allowed_aes=allowed, block=True
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        except OSError as error:
            raise CommandError(f"cannot listen on {host}:{port}: {error}") from None
        except KeyboardInterrupt:
            self.stdout.write("DICOM listener stopped.")
