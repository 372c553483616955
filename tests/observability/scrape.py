"""A parsed /metrics exposition, for tests to read samples from."""

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Scrape:
    """Every sample of one exposition."""

    samples: list[Sample]

    @classmethod
    def parse(cls, text: str) -> "Scrape":
        return cls([s for family in text_string_to_metric_families(text) for s in family.samples])

    def matching(self, name: str, **labels: str) -> list[Sample]:
        """Samples named `name` whose labels include `labels`."""
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The one sample named `name` with exactly these labels (0 when absent)."""
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) <= 1, found
        return found[0] if found else 0.0

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample named `name` whose labels include `labels`."""
        return sum(s.value for s in self.matching(name, **labels))

    def buckets(self, name: str, **labels: str) -> list[float]:
        """A histogram's upper bounds (over all its series), +Inf left out, in order."""
        bounds = {float(s.labels["le"]) for s in self.matching(name + "_bucket", **labels)}
        return sorted(b for b in bounds if b != float("inf"))
