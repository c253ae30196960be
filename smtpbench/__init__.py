"""smtpbench: an SMTP sink and load generator for benchmarking mail servers."""

__version__ = "0.1.0"
