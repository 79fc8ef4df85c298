"""Web WeChat through itchat-uos: the driver of one personal-account login.

The modules, inner ones first (only :mod:`.aio` imports :mod:`.driver`):

* :mod:`.library` -- what this package needs of the installed itchat
  (:func:`~.library.check_itchat`) and its process-wide settings
  (:func:`~.library.configure_itchat`);
* :mod:`.transport` -- the ``requests`` adapter mounted on each session: timeouts,
  interruptible long-polls, the activity tokens;
* :mod:`.contacts` -- itchat's contact lists: slimming them, looking contacts up, what a
  contact is called across logins;
* :mod:`.messages` -- what an itchat message means for the session;
* :mod:`.driver` -- :class:`~.driver.ItchatDriver` and its :class:`~.driver.Phase`;
* :mod:`.aio` -- :class:`~.aio.AsyncItchatDriver`: the same login on a bounded pool,
  receiving as coroutines on the event loop (``WXR_BOT_DRIVER=async``).

Nothing is re-exported here: importing :mod:`.library` to check itchat must not import
the modules that need a working itchat.
"""
