"""The portal in a real browser (headless Chromium driven by Playwright) against a real
gateway and real backends: the seed's walkthrough by its labels and button names, errors
beside their fields, text-only rendering, live health, the dashboard and plugins.

``FASTGW_SCREENSHOTS=docs/portal`` saves the README's pictures while the tests run.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Iterator

import pytest
import requests

from tests.support.admin import admin_config, wait_ready
from tests.support.browser import browser_session, new_page, screenshot
from tests.support.gateway import GatewayProcess
from tests.support.procs import IrisProcess

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_session()


@pytest.fixture(scope="module")
def modules_page(browser: Any) -> Iterator[Any]:
    """One page of a gateway's portal, for the tests of the app's pure JavaScript modules."""
    with GatewayProcess(admin_config(), workers=1) as gw:
        wait_ready(gw, 1)
        page = new_page(browser)
        page.goto(f"{gw.admin_url}/portal/")
        yield page
        page.context.close()


@pytest.fixture
def portal(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    gw = gateway_factory(admin_config(), workers=1)
    wait_ready(gw, 1)
    return gw


def _page(browser: Any, gw: GatewayProcess, where: str = "") -> Any:
    page = new_page(browser)
    page.goto(f"{gw.admin_url}/portal/{where}")
    return page


def _nav(page: Any, name: str) -> None:
    page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
    page.get_by_role("heading", level=1).wait_for()


def _create(page: Any, button: str, fields: dict[str, str]) -> None:
    page.get_by_role("button", name=button, exact=True).click()
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Create", exact=True).click()


def _backends(url: str, tries: int = 20) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        for _ in range(tries):
            r = requests.get(url, timeout=5)
            if r.status_code == 200:
                seen.add(r.json()["result"]["content"]["id"])
        time.sleep(0.05)
    return seen


def test_seed_walkthrough_in_the_browser(browser: Any, portal: GatewayProcess,
                                         iris_pair: tuple[IrisProcess, IrisProcess]) -> None:
    a, b = iris_pair
    page = _page(browser, portal)

    # 1. Workspaces: create one and choose it.
    _nav(page, "Workspaces")
    _create(page, "New Workspace", {"name": "iam"})
    row = page.locator("tr", has_text="iam")
    row.get_by_role("button", name="Use").click()
    page.locator("#current-workspace", has_text="iam").wait_for()

    # 2. Upstreams > New Upstream (name, and an advanced field); open it by its name.
    _nav(page, "Upstreams")
    page.get_by_role("button", name="New Upstream", exact=True).click()
    page.get_by_label("name", exact=True).fill("iris")
    page.get_by_text("Advanced").click()
    page.get_by_label("algorithm", exact=True).select_option("round-robin")
    page.get_by_role("button", name="Create", exact=True).click()
    page.get_by_role("link", name="iris", exact=True).click()

    # 3. New Target, once per IRIS instance.
    for iris in (a, b):
        _create(page, "New Target", {"target": f"127.0.0.1:{iris.port}", "weight": "100"})
        page.get_by_text(f"127.0.0.1:{iris.port}", exact=True).wait_for()
    screenshot(page, "upstream")

    # 4. Services > New Service (name, host = the upstream, path, protocol); its ID shown.
    _nav(page, "Services")
    page.get_by_role("button", name="New Service", exact=True).click()
    page.get_by_label("name", exact=True).fill("atelier")
    page.get_by_label("protocol", exact=True).select_option("http")
    page.get_by_label("host", exact=True).fill("iris")
    page.get_by_label("path", exact=True).fill("/api/atelier")
    page.get_by_role("button", name="Create", exact=True).click()
    service_id = page.locator("#created-id").inner_text()
    assert re.fullmatch(r"[0-9a-f-]{36}", service_id)
    assert page.get_by_role("button", name="Copy ID").is_visible()
    screenshot(page, "services")

    # 5. Routes > New Route (paths, protocols, service chosen by name).
    _nav(page, "Routes")
    page.get_by_role("button", name="New Route", exact=True).click()
    page.get_by_label("name", exact=True).fill("atelier")
    page.get_by_label("service", exact=True).select_option(label="atelier")
    page.get_by_label("paths", exact=True).fill("/api/atelier")
    page.get_by_label("protocols", exact=True).select_option(["http", "https"])
    screenshot(page, "route-form")
    page.get_by_role("button", name="Create", exact=True).click()
    page.locator("#routes-table td", has_text="/api/atelier").wait_for()

    # What the portal did is what the Admin API holds, in the chosen workspace.
    routes = requests.get(portal.admin_url + "/iam/routes", timeout=5).json()["data"]
    assert [r["service"] for r in routes] == [{"id": service_id}]

    # The proxy answers from both emulated backends.
    assert _backends(portal.url + "/api/atelier/") == {"A", "B"}

    # The dashboard counts that traffic, per service.
    _nav(page, "Dashboard")
    row = page.locator("#dashboard-table tr[data-service='atelier']")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for _ in range(20):
            requests.get(portal.url + "/api/atelier/", timeout=5)
        if row.count() and row.locator("td").nth(1).inner_text() not in ("0.0", "–"):
            break
        time.sleep(0.3)
    cells = row.locator("td").all_inner_texts()
    assert float(cells[1]) > 0 and cells[2] == "0.0 %" and cells[3].endswith(" ms"), cells
    screenshot(page, "dashboard")
    assert page.errors == []


def test_rejected_form_shows_the_error_beside_its_field(browser: Any,
                                                        portal: GatewayProcess) -> None:
    page = _page(browser, portal, "#/services")
    page.get_by_role("button", name="New Service", exact=True).click()
    page.get_by_label("name", exact=True).fill("atelier")
    page.get_by_label("host", exact=True).fill("bad host")
    page.get_by_label("port", exact=True).fill("70000")
    page.get_by_role("button", name="Create", exact=True).click()
    host_row = page.locator(".field", has=page.get_by_label("host", exact=True))
    host_row.locator(".field-error", has_text="invalid value: bad host").wait_for()
    port_row = page.locator(".field", has=page.get_by_label("port", exact=True))
    assert port_row.locator(".field-error").inner_text() == "value should be between 0 and 65535"
    # Nothing typed is lost.
    assert page.get_by_label("name", exact=True).input_value() == "atelier"
    assert page.get_by_label("host", exact=True).input_value() == "bad host"
    screenshot(page, "form-error")
    # Corrected, the same form creates the service.
    page.get_by_label("host", exact=True).fill("iris")
    page.get_by_label("port", exact=True).fill("80")
    page.get_by_role("button", name="Create", exact=True).click()
    page.locator("#created-id").wait_for()
    assert page.errors == []


def test_api_text_is_rendered_as_text(browser: Any, portal: GatewayProcess) -> None:
    api = portal.admin_url
    requests.post(api + "/services", json={"name": "tagged", "host": "iris", "tags": [XSS]},
                  timeout=5).raise_for_status()
    page = _page(browser, portal, "#/services")
    page.get_by_text(XSS, exact=True).wait_for()  # a tag, shown as its characters
    # The Admin API quotes a refused name in its error: the message shows as text too.
    page.get_by_role("button", name="New Service", exact=True).click()
    page.get_by_label("name", exact=True).fill(XSS)
    page.get_by_label("host", exact=True).fill("iris")
    page.get_by_role("button", name="Create", exact=True).click()
    name_row = page.locator(".field", has=page.get_by_label("name", exact=True))
    name_row.locator(".field-error", has_text=XSS).wait_for()
    assert page.locator("img").count() == 0
    assert page.errors == []  # no alert() ran, no script error


def test_stopped_backend_turns_unhealthy_on_the_upstream_page(
        browser: Any, portal: GatewayProcess) -> None:
    with IrisProcess("A") as a, IrisProcess("B") as b:
        page = _page(browser, portal, "#/upstreams")
        page.get_by_role("button", name="New Upstream", exact=True).click()
        page.get_by_label("name", exact=True).fill("iris")
        page.get_by_text("Advanced").click()
        active = page.locator("fieldset[data-field='healthchecks.active']")
        active.get_by_label("http_path", exact=True).fill("/api/atelier/")
        healthy = active.locator("fieldset[data-field='healthchecks.active.healthy']")
        healthy.get_by_label("interval", exact=True).fill("0.5")
        healthy.get_by_label("successes", exact=True).fill("1")
        unhealthy = active.locator("fieldset[data-field='healthchecks.active.unhealthy']")
        unhealthy.get_by_label("interval", exact=True).fill("0.5")
        unhealthy.get_by_label("tcp_failures", exact=True).fill("1")
        unhealthy.get_by_label("http_failures", exact=True).fill("1")
        unhealthy.get_by_label("timeouts", exact=True).fill("1")
        page.get_by_role("button", name="Create", exact=True).click()
        page.get_by_role("link", name="iris", exact=True).click()
        for iris in (a, b):
            _create(page, "New Target", {"target": f"127.0.0.1:{iris.port}"})
        rows = {iris.id: page.locator("tr", has_text=f"127.0.0.1:{iris.port}") for iris in (a, b)}
        for row in rows.values():
            row.locator(".health", has_text="HEALTHY").wait_for(timeout=15_000)
        b.stop()
        rows["B"].locator(".health", has_text="UNHEALTHY").wait_for(timeout=15_000)
        assert rows["A"].locator(".health").inner_text() == "HEALTHY"
        screenshot(page, "health")
        assert page.errors == []


def test_plugins_added_and_edited_from_their_schema(browser: Any,
                                                    portal: GatewayProcess) -> None:
    api = portal.admin_url
    requests.post(api + "/services", json={"name": "atelier", "host": "iris"},
                  timeout=5).raise_for_status()
    page = _page(browser, portal, "#/plugins")
    page.get_by_role("button", name="New Plugin", exact=True).click()
    page.get_by_label("name", exact=True).select_option("canary")
    page.get_by_label("service", exact=True).select_option(label="atelier")
    config = page.locator("fieldset[data-field='config']")
    config.get_by_label("percentage", exact=True).fill("10")
    config.get_by_label("upstream_host", exact=True).fill("iris-green")
    page.get_by_role("button", name="Create", exact=True).click()
    row = page.locator("#plugins-table tr", has_text="canary")
    row.wait_for()
    row.get_by_role("button", name="Edit").click()
    config.get_by_label("percentage", exact=True).fill("25")
    page.get_by_role("button", name="Save", exact=True).click()
    page.locator("#form-slot form").wait_for(state="detached")
    plugin = requests.get(api + "/plugins", timeout=5).json()["data"][0]
    assert plugin["config"]["percentage"] == 25 and plugin["config"]["upstream_host"] == \
        "iris-green"
    assert plugin["service"] is not None
    # A delete asks first: dismissed, the plugin stays; accepted, it goes.
    page.confirms.append(False)
    row.get_by_role("button", name="Delete").click()
    page.wait_for_function("() => true")  # one round trip: the dialog has been answered
    assert page.asked == ['Delete plugin "canary"?']
    assert len(requests.get(api + "/plugins", timeout=5).json()["data"]) == 1
    page.confirms.append(True)
    row.get_by_role("button", name="Delete").click()
    page.get_by_text("No plugins yet.").wait_for()
    assert len(page.asked) == 2 and requests.get(api + "/plugins", timeout=5).json()["data"] == []
    assert page.errors == []


@pytest.mark.parametrize(("buckets", "q", "expected"), [
    ({"10": 0, "25": 100, "+Inf": 100}, 0.99, 24.85),  # inside (10, 25]: interpolated
    ({"10": 50, "25": 100, "+Inf": 100}, 0.5, 10.0),   # exactly a bound
    ({"10": 0, "25": 0, "+Inf": 10}, 0.99, 25.0),      # beyond the last finite bound
    ({"10": 0, "+Inf": 0}, 0.99, None),                 # nothing observed
])
def test_dashboard_quantile(modules_page: Any, buckets: dict[str, int], q: float,
                            expected: float | None) -> None:
    got = modules_page.evaluate("""async ([buckets, q]) => {
        const m = await import('./js/metrics.js');
        const map = new Map(Object.entries(buckets).map(([le, n]) =>
            [le === '+Inf' ? Infinity : Number(le), n]));
        return m.quantile(q, map);
    }""", [buckets, q])
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_dashboard_rates_from_prometheus_text(modules_page: Any) -> None:
    before = ('fastgw_http_requests_total{service="a",route="r",code="200",source="service"} 10\n'
              'fastgw_http_requests_total{service="a",route="r",code="502",source="kong"} 0\n')
    after = ('# HELP ignored\n'
             'fastgw_http_requests_total{service="a",route="r",code="200",source="service"} 28\n'
             'fastgw_http_requests_total{service="a",route="r",code="502",source="kong"} 2\n'
             'fastgw_request_latency_ms_bucket{service="a",route="r",le="25"} 20\n'
             'fastgw_request_latency_ms_bucket{service="a",route="r",le="+Inf"} 20\n'
             'fastgw_http_requests_total{service="b \\"q\\"",route="r",code="200"} 4\n')
    rows = modules_page.evaluate("""async ([before, after]) => {
        const m = await import('./js/metrics.js');
        return m.rates(m.totals(m.parse(before), 'fastgw'), m.totals(m.parse(after), 'fastgw'), 2);
    }""", [before, after])
    assert rows[0] == {"service": "a", "rps": 10.0, "errorRate": 0.1, "p99": pytest.approx(24.75),
                       "total": 30}
    assert rows[1]["service"] == 'b "q"' and rows[1]["rps"] == 2.0


@pytest.mark.parametrize(("fields", "expected"), [
    ({"host": "required field missing"}, [["host", "required field missing"]]),
    ({"healthchecks": {"active": {"timeout": "bad"}}}, [["healthchecks.active.timeout", "bad"]]),
    ({"@entity": ["one", "two"]}, [["", "one"], ["", "two"]]),
    ({"config": {"@entity": ["need one"]}}, [["config", "need one"]]),
    ({"paths": [None, "should start with: /"]}, [["paths", "[1] should start with: /"]]),
])
def test_form_errors_flattened_to_their_fields(modules_page: Any, fields: dict[str, Any],
                                               expected: list[list[str]]) -> None:
    got = modules_page.evaluate("""async (fields) => {
        const m = await import('./js/forms.js');
        return m.flattenErrors(fields);
    }""", fields)
    assert got == expected


def test_portal_asks_for_the_admin_token(browser: Any,
                                         gateway_factory: Callable[..., GatewayProcess]) -> None:
    gw = gateway_factory(admin_config(admin_token="s3cret"), workers=1)
    page = _page(browser, gw, "#/services")
    page.get_by_label("admin token", exact=True).fill("s3cret")
    page.get_by_role("button", name="Use token").click()
    page.get_by_text("No services yet.").wait_for()
    assert page.errors == []
