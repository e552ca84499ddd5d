"""The probe texts ``auto`` numerics times and compares on: short posts of the lengths live
traffic has (tweets and comments, 5-70 tokens), written for this purpose, so the probe needs
no data set and is the same on every machine."""

from __future__ import annotations

__all__ = ["PROBE_TEXTS"]

_SHORT = (
    "lol ok",
    "thanks for the follow!",
    "this game was trash tonight",
    "you are an idiot and everyone knows it",
    "Can anyone recommend a good plumber in the east side?",
    "I can't believe they cancelled the show after one season, so annoying",
    "shut up you stupid clown nobody asked you",
    "Free entry!! Text WIN to 80086 now to claim your prize of 1000 pounds",
    "happy birthday sis, love you loads",
    "the referee should be banned for life after that call",
    "I feel like nothing matters anymore and I just want it all to stop",
    "go back to where you came from, we don't want your kind here",
    "Meeting moved to 3pm, same room. Bring the slides please.",
    "that's the dumbest take I've read all week",
    "i swear if my neighbour plays drums at 2am again i'm calling the cops",
    "Congratulations! You have been selected for a free cruise, click the link",
    "those people are animals and should be treated like it",
    "new recipe turned out great, will post pics later",
    "why does every update break the app on my phone",
    "kill yourself",
    "He's not wrong, the council has ignored this road for years",
    "RT @user: can't wait for the weekend #friday",
    "women like her belong in the kitchen not in parliament",
    "The train was 40 minutes late again and nobody said anything",
    "u up?",
    "I've been clean for six months today, thank you all for the support",
    "what a beautiful sunset over the bay this evening",
    "she's a lying snake and I hope she loses everything",
    "Get cheap meds online, no prescription needed, discreet shipping",
    "honestly the best pizza in town is the little place on 5th",
    "if you vote for them you're part of the problem, simple as that",
    "my dog ate my headphones, send help",
)
# Pairs joined: the longer posts (threads, comments) of the same traffic.
PROBE_TEXTS: tuple[str, ...] = _SHORT + tuple(
    f"{a} {b}" for a, b in zip(_SHORT, _SHORT[7:] + _SHORT[:7], strict=True)
)
