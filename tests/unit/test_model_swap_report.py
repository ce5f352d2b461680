"""The model swap report's filters: requests between two counter readings, and the table."""

import repo_scripts

report_filters = repo_scripts.load("plugins/filter/model_swap_report.py")
runtime = repo_scripts.load("plugins/module_utils/haproxy_runtime.py")


def test_requests_are_the_difference_per_lb_and_in_total():
    before = {"lb-1": {"served": 100, "failed": 2, "truncated": 1}}
    after = {
        "lb-1": {"served": 160, "failed": 2, "truncated": 1},
        "lb-2": {"served": "40", "failed": "0", "truncated": "0"},
    }
    requests = report_filters.model_swap_requests(after, before)
    assert requests["per_lb"] == {
        "lb-1": {"served": 60, "failed": 0, "truncated": 0},
        # An LB whose HAProxy started during the run counts from zero.
        "lb-2": {"served": 40, "failed": 0, "truncated": 0},
    }
    assert requests["total"] == {"served": 100, "failed": 0, "truncated": 0}


STAT_CSV = """\
# pxname,svname,qcur,scur,srv_abrt,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other
ollama,FRONTEND,,,,0,100,0,7,2,0
be_model_team::llama3.1:8b,gpu-1,0,0,1,0,50,0,0,0,0
be_model_team::llama3.1:8b,BACKEND,0,0,1,0,50,0,0,0,0
be_alias_chat,BACKEND,0,0,2,0,50,0,0,0,0
be_default,BACKEND,0,0,0,0,0,0,0,0,0
"""
TABLE_TEXT = """# table: st_models, type: string, size:10000, used:3
0x55addf10c8c0: key=chat use=0 exp=86390893 gpc0=50 http_req_cnt=51 gpc1=0
0x55addf10c8c1: key=team/llama3.1:8b use=0 exp=86390893 gpc0=50 http_req_cnt=50 gpc1=0
0x55addf10c8c2: key=nosuch:1b use=0 exp=86390893 gpc0=0 http_req_cnt=7 gpc1=7
"""
# As haproxy_stat returns them: show stat's rows, and the table's entries.
STAT = runtime.parse_stat(STAT_CSV)
TABLE = runtime.parse_table(TABLE_TEXT)


def test_an_lbs_counters_count_every_non_2xx_and_each_names_answers():
    counters = report_filters.model_swap_counters(STAT, TABLE)
    # 2xx less the 3 streams cut after their 200; 7 + 2 answers that were not 2xx.
    assert (counters["served"], counters["failed"], counters["truncated"]) == (97, 9, 3)
    assert counters["names"] == {
        "chat": {"requests": 51, "served": 48, "failed": 0, "truncated": 2},
        "team/llama3.1:8b": {"requests": 50, "served": 49, "failed": 0, "truncated": 1},
        "nosuch:1b": {"requests": 7, "served": 0, "failed": 7, "truncated": 0},
    }


def test_names_are_counted_between_readings_and_summed_over_lbs():
    before = {"lb-1": report_filters.model_swap_counters(STAT, TABLE)}
    later = {**TABLE, "nosuch:1b": {**TABLE["nosuch:1b"], "gpc1": "19", "http_req_cnt": "19"}}
    after = {
        "lb-1": report_filters.model_swap_counters(STAT, later),
        "lb-2": report_filters.model_swap_counters(STAT, TABLE),
    }
    per_name = report_filters.model_swap_requests(after, before)["per_name"]
    assert per_name["nosuch:1b"] == {"requests": 19, "served": 0, "failed": 19, "truncated": 0}
    assert per_name["chat"] == {"requests": 51, "served": 48, "failed": 0, "truncated": 2}


def test_the_table_has_a_row_per_host_the_error_under_it_and_the_requests_last():
    report = {
        "hosts": [
            {
                "host": "gpu-1",
                "from": "llama3.1:8b",
                "to": "mistral:7b",
                "outcome": "swapped",
                "drain_wait_s": 6.8,
                "pull_s": 0.8,
                "warm_s": 1.7,
                "total_s": 23.2,
            },
            {
                "host": "gpu-2",
                "outcome": "rolled back",
                "failed_task": "Pull mistral:7b",
                "error": "digest mismatch",
            },
        ],
        "requests": {
            "total": {"served": 280, "failed": 0, "truncated": 0},
            "per_name": {
                "chat": {"requests": 200, "served": 200, "failed": 0, "truncated": 0},
                "llama3.1:8b": {"requests": 90, "served": 80, "failed": 10, "truncated": 0},
            },
        },
        "retired": {"llama3.1:8b": "2026-12-04T21:39:03.697759Z"},
        "wall_s": 94.8,
        "outcome": "rolled back",
    }
    lines = report_filters.model_swap_table(report)
    assert lines[0].split() == [
        "host",
        "from",
        "to",
        "alias",
        "outcome",
        "drain_wait_s",
        "pull_s",
        "warm_s",
        "total_s",
    ]
    assert lines[1].split() == [
        "gpu-1",
        "llama3.1:8b",
        "mistral:7b",
        "-",
        "swapped",
        "6.8",
        "0.8",
        "1.7",
        "23.2",
    ]
    assert lines[2].split()[:3] == ["gpu-2", "-", "-"]
    assert lines[3] == "  Pull mistral:7b: digest mismatch"
    assert lines[4] == "  chat: 200 requests, 200 served, 0 failed, 0 truncated"
    assert lines[5] == (
        "  llama3.1:8b: 90 requests, 80 served, 10 failed, 0 truncated; "
        "retired at 2026-12-04T21:39:03.697759Z"
    )
    assert lines[-1] == (
        "requests through the LBs: 280 served, 0 failed, 0 truncated; wall 94.8 s; rolled back"
    )
