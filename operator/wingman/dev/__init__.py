"""The development harness: a local control plane, a node stand-in, ``wingman dev run``.

Owns starting kube-apiserver, etcd and kube-controller-manager on loopback (``cluster``),
a real node beside it: kubelet, kube-proxy, kube-scheduler and containerd (``kubelet``), the
node stand-in that plays scheduler and kubelet where that cannot run (``node``), a private
Docker Engine (``engine``), stopping the processes it starts (``processes``), provisioning the
pinned tools (``tools``) and ``wingman dev run`` (``run``).
Not part of the runtime: the image and the wheel do not carry it, and nothing but
``wingman.cli.main`` (for ``wingman dev``) and the tests imports it. It may import anything.
"""
