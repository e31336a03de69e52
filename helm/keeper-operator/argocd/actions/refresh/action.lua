-- Requests a sync now: a new value of this annotation makes the operator sync the KeeperSecret
-- (within its credential's request budget) and echo the value in status.lastHandledReconcileAt.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["keeper-operator.dev/force-sync"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
