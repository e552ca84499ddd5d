"""Human review: the prioritised queue, labels from several moderators, active learning.
Arrives with the human review loop issue."""
