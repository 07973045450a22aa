"""The wingman.dev objects as both sides read them: names, labels and the shared rules.

What the operator and the gateway must agree on lives here, so neither imports the other:
the names and labels of the objects the operator makes and the gateway finds (``names``), when
an approval may be acted on and which grant its command went to (``approvals``), the phases
of a grant (``grants``), the preview's result, its channel from the preview Job to the
operator and the state-binding rule the gateway applies (``preview``), the characters the
CRDs refuse in spec text, which the client refuses too (``text``), the bounds of the CRDs'
schemas (``limits``), and what a command line may hold at all, the scope check's first rules,
which the client applies before any call too (``commandline``).

May import: ``wingman.conditions`` and the standard library. Pure.
"""
