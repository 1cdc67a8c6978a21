"""Cost of open and click tracking per message: the bench's 3.7 KB email, rewritten.

Run `python -m bench.tracking`. Prints microseconds per message for clicks, opens and both,
beside the render of the same message, and the number of links tracked.
"""

from __future__ import annotations

import re
import time
import timeit

from bench import fixtures
from tidings.config import Settings
from tidings.content.engine import TemplateEngine
from tidings.content.schemas import EmailContent
from tidings.content.service import render_content, template_variables
from tidings.ids import new_id
from tidings.tracking.rewrite import Tracker
from tidings.tracking.tokens import TrackingTokens

ROUNDS = 7
NUMBER = 2000


def _best(statement: object) -> float:
    """Microseconds per call, best of ROUNDS (the least disturbed by the rest of the machine)."""
    # CPU time of this process: steadier than wall time on a machine busy with other work.
    times = timeit.repeat(
        statement,  # type: ignore[arg-type]
        number=NUMBER,
        repeat=ROUNDS,
        timer=time.process_time,
    )
    return min(times) / NUMBER * 1e6


def main() -> None:
    settings = Settings()
    engine = TemplateEngine(fuel=settings.template_fuel, max_source_bytes=10**6)
    content = EmailContent.model_validate(fixtures.CONTENT)
    variables = template_variables(
        profile=fixtures.PROFILE,
        context=fixtures.CONTEXT,
        campaign_id="0193a1f0-bench-campaign",
        campaign_name="Order shipped",
        unsubscribe_url=fixtures.UNSUBSCRIBE_URL,
    )
    html = render_content(engine, content, variables)["html"]
    tracker = Tracker(TrackingTokens(b"b" * 32), fixtures.UNSUBSCRIBE_URL.split("/unsubscribe/")[0])
    workspace, message = new_id(), new_id()
    tracked = tracker.apply(html, workspace, message, clicks=True, opens=True)
    links = len(re.findall(r"/t/c/", tracked))
    render = _best(lambda: render_content(engine, content, variables))
    print(f"HTML {len(html)} bytes, {links} links tracked, {len(tracked)} bytes after")
    print(f"render (reference)      {render:7.1f} us/message")
    for label, clicks, opens in (
        ("clicks", True, False),
        ("opens", False, True),
        ("clicks and opens", True, True),
    ):
        cost = _best(
            lambda c=clicks, o=opens: tracker.apply(html, workspace, message, clicks=c, opens=o)
        )
        print(f"{label:<23} {cost:7.1f} us/message ({cost / render:.0%} of the render)")


if __name__ == "__main__":
    main()
