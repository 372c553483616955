"""How hard each fuzz run tries: bounded, deterministic hypothesis settings that write nothing."""

from hypothesis import HealthCheck, Phase, settings

# The gateways and the fake upstream are shared by every example of a test (set up once per
# module or session): reusing them across examples is the point, not a mistake.
SUPPRESSED = (
    HealthCheck.function_scoped_fixture,
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
)


def fuzz_settings(max_examples: int) -> settings:
    """`max_examples` cases drawn the same way on every run (CI sees what a developer saw),
    no example database, no deadline (a round trip over sockets varies), shrinking kept so a
    failure is reported at its smallest."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=SUPPRESSED,
    )
