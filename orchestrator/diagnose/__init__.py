"""What a user asks of a lab: `status`, `doctor`, `drops`, `trace` and `explain`."""
