-- gpufleet: hold a request whose backend has no usable server (every host of its model
-- draining or down) until one is back, up to the given milliseconds, as HAProxy's queue
-- holds a request while every server is full. HAProxy alone answers 503 at once then.
-- An old worker after a reload counts no server in its stopped backends, yet still serves
-- them: it never waits.
--   http-request lua.gpufleet_wait_for_server 120000 if { nbsrv eq 0 } !{ stopping }
local STEP_MS = 100

core.register_action("gpufleet_wait_for_server", { "http-req" }, function(txn, wait_ms)
  local waited = 0
  while txn.f:nbsrv() == 0 and not txn.f:stopping() and waited < tonumber(wait_ms) do
    core.msleep(STEP_MS)
    waited = waited + STEP_MS
  end
end, 1)
