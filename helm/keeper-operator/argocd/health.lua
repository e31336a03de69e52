-- Argo CD health of a keeper-operator.dev KeeperSecret, from the conditions the operator sets.
-- Runs without Lua's string library (argocd-cm customizations do by default).
local hs = { status = "Progressing", message = "Waiting for the operator to sync this KeeperSecret" }
local status = obj.status
if status == nil or status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.message = "Waiting for the operator to sync generation " .. generation
  return hs
end
local conditions = {}
for _, c in ipairs(status.conditions) do
  conditions[c.type] = c
end
local ready, stale = conditions["Ready"], conditions["Stale"]
local stalled, reconciling = conditions["Stalled"], conditions["Reconciling"]
-- A condition written for an older generation says nothing about this one.
if ready ~= nil and ready.observedGeneration ~= nil and generation ~= nil
    and ready.observedGeneration ~= generation then
  hs.message = "Waiting for the operator to sync generation " .. generation
  return hs
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. stalled.message
  return hs
end
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.reason .. ": " .. ready.message
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  -- Keeper fails but the Secret still holds the last good copy, within the allowed age.
  if stale ~= nil and stale.status == "True" then
    hs.message = "Stale, serving the last good copy (" .. stale.reason .. "): " .. stale.message
  end
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = reconciling.reason .. ": " .. reconciling.message
end
return hs
