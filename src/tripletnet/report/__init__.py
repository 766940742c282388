"""What a person reads: the self-contained HTML report (the PNG figures live in tripletnet.plots)."""
