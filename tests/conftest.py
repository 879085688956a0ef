pytest_plugins = [
    "tests.support.redis_server",
    "tests.support.netns",
    "tests.support.kube",
    "tests.support.kube_real",
]
