"""Tests of the jobs_emulator development tool."""
