// Tessera's WebAuthn glue: the only script on Tessera's pages. A form marked data-webauthn
// ("register" or "authenticate") fetches the ceremony options from data-options, runs
// navigator.credentials.create/get, puts the authenticator's answer (JSON, binary fields in
// base64url) into the form's "credential" field and submits the form normally, so the server answers
// with an ordinary page. Everything else on the pages works without JavaScript.
(function () {
  "use strict";

  function toBuffer(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) {
      b64 += "=";
    }
    var binary = atob(b64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // WebIDL dictionaries refuse null where a value is optional: drop nulls.
  function withoutNulls(value) {
    if (Array.isArray(value)) {
      return value.map(withoutNulls);
    }
    if (value && typeof value === "object") {
      var out = {};
      Object.keys(value).forEach(function (key) {
        if (value[key] !== null) {
          out[key] = withoutNulls(value[key]);
        }
      });
      return out;
    }
    return value;
  }

  function creationOptions(options) {
    var pk = options.publicKey;
    pk.challenge = toBuffer(pk.challenge);
    pk.user.id = toBuffer(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) {
      c.id = toBuffer(c.id);
    });
    return { publicKey: pk };
  }

  function requestOptions(options) {
    var pk = options.publicKey;
    pk.challenge = toBuffer(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) {
      c.id = toBuffer(c.id);
    });
    var out = { publicKey: pk };
    if (options.mediation) {
      out.mediation = options.mediation;
    }
    return out;
  }

  var KNOWN_TRANSPORTS = ["usb", "nfc", "ble", "internal", "hybrid"];

  function registration(credential) {
    var r = credential.response;
    var transports = r.getTransports ? r.getTransports() : [];
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: toText(r.attestationObject),
        clientDataJSON: toText(r.clientDataJSON),
        transports: transports.filter(function (t) {
          return KNOWN_TRANSPORTS.indexOf(t) >= 0;
        })
      },
      extensions: {}
    };
  }

  function assertion(credential) {
    var r = credential.response;
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toText(r.authenticatorData),
        clientDataJSON: toText(r.clientDataJSON),
        signature: toText(r.signature),
        userHandle: r.userHandle ? toText(r.userHandle) : null
      },
      extensions: {}
    };
  }

  function run(form, status) {
    var body = new URLSearchParams();
    body.append("csrf_token", form.elements.csrf_token.value);
    status.textContent = "Follow the instructions of your browser or security key.";
    return fetch(form.getAttribute("data-options"), {
      method: "POST",
      body: body,
      credentials: "same-origin"
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("Tessera could not start (" + response.status + ")");
        }
        return response.json();
      })
      .then(function (options) {
        options = withoutNulls(options);
        if (form.getAttribute("data-webauthn") === "register") {
          return navigator.credentials.create(creationOptions(options)).then(registration);
        }
        return navigator.credentials.get(requestOptions(options)).then(assertion);
      })
      .then(function (answer) {
        form.elements.credential.value = JSON.stringify(answer);
        status.textContent = "Checking…";
        form.submit();
      });
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[data-webauthn]"), function (form) {
    var status = form.querySelector("[role=status]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!window.PublicKeyCredential || !navigator.credentials) {
        status.textContent = "This browser cannot use security keys or passkeys.";
        return;
      }
      run(form, status).catch(function (error) {
        status.textContent = "That did not work (" + error.message + "). You can try again.";
      });
    });
  });
})();
