-- gpufleet: hold a request whose backend has no usable server (every host of its model
-- draining or down) until one is back, up to the given milliseconds, as HAProxy's queue
-- holds a request while every server is full. HAProxy alone answers 503 at once then.
-- An old worker after a reload counts no server in its stopped backends, yet still serves
-- them: it never waits.
--   http-request lua.gpufleet_wait_for_server 120000 if { nbsrv eq 0 } !{ stopping }
local STEP_MS = 100

-- Sample fetches give a boolean as the number 0 or 1 here, and 0 is true in Lua.
local function stopping(txn)
  local value = txn.f:stopping()
  return value == true or value == 1
end

core.register_action("gpufleet_wait_for_server", { "http-req" }, function(txn, wait_ms)
  local waited = 0
  while txn.f:nbsrv() == 0 and not stopping(txn) and waited < tonumber(wait_ms) do
    core.msleep(STEP_MS)
    waited = waited + STEP_MS
  end
end, 1)
