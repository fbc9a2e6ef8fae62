"""Test helpers for code that uses aqido: a fake QIDO-RS archive and a real Orthanc launcher."""

from __future__ import annotations
