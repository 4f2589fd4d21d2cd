"""Work pool, automations and the local stack (open issue: operations). Nothing here yet."""
