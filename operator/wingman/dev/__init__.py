"""The development harness: a local control plane, a node stand-in, ``wingman dev run``.

Owns starting kube-apiserver, etcd and kube-controller-manager on loopback (``cluster``),
playing scheduler and kubelet for gateway pods (``node``), a private Docker Engine
(``engine``), provisioning the pinned tools (``tools``) and ``wingman dev run`` (``run``).
Not part of the runtime: the image and the wheel do not carry it, and nothing but
``wingman.cli.main`` (for ``wingman dev``) and the tests imports it. It may import anything.
"""
