"""Multiple-instance math over flat ragged bags: segment reductions, aggregations, posteriors given the label, losses, PsLab, what scores mean for a response."""
