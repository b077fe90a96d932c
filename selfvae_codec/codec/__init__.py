"""Entropy coding (constriction ANS) and the four reconstruction modes."""
